import Devices
import GuestMemory
import Synchronization
import Testing
@testable import Virtio
@testable import VirtioDevices

/// The virtio-mmio transport driven the way Linux's virtio_mmio driver drives it.
@Suite struct VirtioMMIOTransportTests {
    typealias Reg = VirtioMMIOTransport.Register
    typealias Status = VirtioMMIOTransport.Status

    final class Events: Sendable {
        let interrupts = Atomic<Int>(0)
        let notified = Mutex<[Int]>([])
        let reports = Mutex<[String]>([])
    }

    let memory: GuestMemory
    init() throws { memory = try GuestMemory(layout: [(0, 0x10000), (0x20000, 0x10000)]) }

    func makeTransport(_ events: Events, device: any VirtioDevice = EntropyDevice()) -> VirtioMMIOTransport {
        VirtioMMIOTransport(name: "test", device: device, memory: memory,
                            interrupt: { events.interrupts.add(1, ordering: .relaxed) },
                            notify: { q in events.notified.withLock { $0.append(q) } },
                            report: { m in events.reports.withLock { $0.append(m) } })
    }

    func w(_ t: VirtioMMIOTransport, _ r: UInt64, _ v: UInt64) { t.write(offset: r, width: 4, value: v) }
    func r(_ t: VirtioMMIOTransport, _ reg: UInt64) -> UInt64 { t.read(offset: reg, width: 4) }

    /// Feature negotiation and queue 0 set up at the fake driver's rings, then DRIVER_OK.
    func bringUp(_ t: VirtioMMIOTransport, _ driver: FakeDriver) {
        w(t, Reg.status, UInt64(Status.acknowledge | Status.driver))
        w(t, Reg.driverFeaturesSelect, 1)
        w(t, Reg.driverFeatures, 1)                          // VERSION_1 (bit 32)
        w(t, Reg.status, UInt64(Status.acknowledge | Status.driver | Status.featuresOK))
        w(t, Reg.queueSelect, 0)
        w(t, Reg.queueSize, UInt64(driver.size))
        w(t, Reg.queueDescriptorLow, driver.descriptorTable.raw)
        w(t, Reg.queueDriverLow, driver.availableRing.raw)
        w(t, Reg.queueDeviceLow, driver.usedRing.raw)
        w(t, Reg.queueReady, 1)
        w(t, Reg.status, UInt64(Status.acknowledge | Status.driver | Status.featuresOK | Status.driverOK))
    }

    /// Firecracker's PATCH /drives: a disk gets a new file; the driver sees the new capacity,
    /// a new configuration generation and a configuration-change interrupt.
    @Test func replacingADisksFileSignalsAConfigurationChange() {
        let events = Events()
        let disk = BlockDevice(backend: MemoryBlockBackend(size: 4096))
        let t = makeTransport(events, device: disk)
        let generation = r(t, Reg.configGeneration)
        #expect(t.read(offset: Reg.config, width: 4) == 8)              // capacity: 8 sectors
        t.changeDevice { device in (device as! BlockDevice).replaceBackend(MemoryBlockBackend(size: 3 * 512)) == nil }
        #expect(t.read(offset: Reg.config, width: 4) == 3)
        #expect(r(t, Reg.configGeneration) == generation + 1)
        #expect(r(t, Reg.interruptStatus) & 2 == 2)                     // configuration change
        #expect(events.interrupts.load(ordering: .relaxed) == 1)
        t.changeDevice { _ in false }                                   // nothing changed: no interrupt
        #expect(events.interrupts.load(ordering: .relaxed) == 1)
    }

    @Test func identifiesItselfAsVirtioMMIOVersion2() {
        let t = makeTransport(Events())
        #expect(r(t, Reg.magic) == 0x7472_6976)
        #expect(r(t, Reg.version) == 2)
        #expect(r(t, Reg.deviceID) == 4)
        w(t, Reg.deviceFeaturesSelect, 1)
        #expect(r(t, Reg.deviceFeatures) & 1 == 1)            // VERSION_1
        #expect(r(t, Reg.queueSizeMax) == 256)
        w(t, Reg.queueSelect, 5)
        #expect(r(t, Reg.queueSizeMax) == 0)                  // no such queue
    }

    @Test func featuresNotOfferedOrWithoutVersion1AreRefused() {
        let t = makeTransport(Events())
        w(t, Reg.driverFeaturesSelect, 0)
        w(t, Reg.driverFeatures, 1 << 7)                       // not offered
        w(t, Reg.driverFeaturesSelect, 1)
        w(t, Reg.driverFeatures, 1)
        w(t, Reg.status, UInt64(Status.acknowledge | Status.driver | Status.featuresOK))
        #expect(r(t, Reg.status) & UInt64(Status.featuresOK) == 0)
        let t2 = makeTransport(Events())
        w(t2, Reg.status, UInt64(Status.acknowledge | Status.driver | Status.featuresOK))   // no VERSION_1
        #expect(r(t2, Reg.status) & UInt64(Status.featuresOK) == 0)
    }

    @Test func servesAQueueAndInterrupts() throws {
        let events = Events()
        let t = makeTransport(events)
        let driver = try FakeDriver(memory: memory, size: 16, descriptorTable: 0x1000, availableRing: 0x2000, usedRing: 0x3000)
        bringUp(t, driver)
        _ = try driver.addChain([.writable(0x4000, 32)])
        w(t, Reg.queueNotify, 0)
        #expect(events.notified.withLock { $0 } == [0])       // handed to the event thread
        t.serve(queue: 0)
        #expect(try driver.usedIndex() == 1)
        #expect(try driver.usedElement(0).length == 32)
        #expect(events.interrupts.load(ordering: .relaxed) == 1)
        #expect(r(t, Reg.interruptStatus) == 1)
        w(t, Reg.interruptAcknowledge, 1)
        #expect(r(t, Reg.interruptStatus) == 0)
        #expect(!t.needsReset)
    }

    @Test func malformedQueueMarksOnlyThatDeviceAndResetRecovers() throws {
        let events = Events(), other = Events()
        let broken = makeTransport(events)
        let healthy = makeTransport(other)
        let d1 = try FakeDriver(memory: memory, size: 16, descriptorTable: 0x1000, availableRing: 0x2000, usedRing: 0x3000)
        let d2 = try FakeDriver(memory: memory, size: 16, descriptorTable: 0x5000, availableRing: 0x6000, usedRing: 0x7000)
        bringUp(broken, d1)
        bringUp(healthy, d2)
        // A buffer in the hole between the two RAM regions.
        _ = try d1.addChain([.writable(0x1_8000, 64)])
        broken.serve(queue: 0)
        #expect(broken.needsReset)
        #expect(r(broken, Reg.status) & UInt64(Status.needsReset) != 0)
        #expect(r(broken, Reg.interruptStatus) & 2 == 2)       // configuration change
        #expect(try d1.usedIndex() == 0)
        broken.serve(queue: 0)                                 // no more work, no more logs
        #expect(events.reports.withLock { $0 }.count == 1)
        #expect(events.reports.withLock { $0 }.first?.contains("needs reset") == true)
        // The other device is unaffected.
        _ = try d2.addChain([.writable(0x8000, 16)])
        healthy.serve(queue: 0)
        #expect(try d2.usedIndex() == 1)
        #expect(!healthy.needsReset)
        // Driver reset clears the condition.
        w(broken, Reg.status, 0)
        #expect(!broken.needsReset)
        #expect(r(broken, Reg.status) == 0)
    }

    @Test func queueConfigurationIsFrozenWhileRunning() throws {
        let t = makeTransport(Events())
        let driver = try FakeDriver(memory: memory, size: 16, descriptorTable: 0x1000, availableRing: 0x2000, usedRing: 0x3000)
        bringUp(t, driver)
        w(t, Reg.queueDescriptorLow, 0x1_8000)                 // ignored after DRIVER_OK
        _ = try driver.addChain([.writable(0x4000, 8)])
        t.serve(queue: 0)
        #expect(try driver.usedIndex() == 1)
        #expect(!t.needsReset)
    }

    @Test func badRingsAtDriverOKNeedReset() throws {
        let events = Events()
        let t = makeTransport(events)
        w(t, Reg.queueSelect, 0)
        w(t, Reg.queueSize, 12)                                // not a power of two
        w(t, Reg.queueReady, 1)
        w(t, Reg.status, UInt64(Status.acknowledge | Status.driver))
        w(t, Reg.driverFeaturesSelect, 1); w(t, Reg.driverFeatures, 1)
        w(t, Reg.status, UInt64(Status.acknowledge | Status.driver | Status.featuresOK))
        w(t, Reg.status, UInt64(Status.acknowledge | Status.driver | Status.featuresOK | Status.driverOK))
        #expect(t.needsReset)
        #expect(events.reports.withLock { $0 }.count == 1)
    }
}

@Suite struct ConsoleDeviceTests {
    final class Sink: Sendable { let bytes = Mutex<[UInt8]>([]) }

    @Test func guestOutputReachesTheSinkAndInputReachesTheGuest() throws {
        let memory = try GuestMemory(layout: [(0, 0x10000)])
        let sink = Sink()
        let device = ConsoleDevice(output: { b in sink.bytes.withLock { $0 += b } })
        let rx = try FakeDriver(memory: memory, size: 8, descriptorTable: 0x1000, availableRing: 0x1200, usedRing: 0x1400)
        let tx = try FakeDriver(memory: memory, size: 8, descriptorTable: 0x2000, availableRing: 0x2200, usedRing: 0x2400)
        var rxQueue = rx.makeQueue(), txQueue = tx.makeQueue()
        // Transmit: two buffers of one chain arrive in order.
        try memory.write(Array("hello ".utf8), at: GuestAddress(0x3000))
        try memory.write(Array("hvc0\n".utf8), at: GuestAddress(0x3100))
        _ = try tx.addChain([.readable(0x3000, 6), .readable(0x3100, 5)])
        #expect(try device.process(queue: ConsoleDevice.transmitQueue, &txQueue, memory: memory))
        #expect(String(decoding: sink.bytes.withLock { $0 }, as: UTF8.self) == "hello hvc0\n")
        // Receive: nothing pending leaves the guest's buffer alone.
        _ = try rx.addChain([.writable(0x4000, 4)])
        #expect(try !device.process(queue: ConsoleDevice.receiveQueue, &rxQueue, memory: memory))
        #expect(try rx.usedIndex() == 0)
        // Six bytes pending, a 4-byte buffer: 4 now, 2 when the next buffer comes.
        #expect(device.enqueueInput(Array("ping\n!".utf8)) == 6)
        #expect(try device.process(queue: ConsoleDevice.receiveQueue, &rxQueue, memory: memory))
        #expect(try rx.usedElement(0).length == 4)
        #expect(try memory.read(at: GuestAddress(0x4000), count: 4) == Array("ping".utf8))
        _ = try rx.addChain([.writable(0x4100, 16)])
        #expect(try device.process(queue: ConsoleDevice.receiveQueue, &rxQueue, memory: memory))
        #expect(try rx.usedElement(1).length == 2)
        #expect(device.inputSpace == ConsoleDevice.maxPendingInput)
    }

    @Test func pendingInputIsBounded() {
        let device = ConsoleDevice(output: { _ in })
        #expect(device.enqueueInput([UInt8](repeating: 0x41, count: ConsoleDevice.maxPendingInput + 10))
                == ConsoleDevice.maxPendingInput)
        #expect(device.inputSpace == 0)
        device.reset()
        #expect(device.inputSpace == ConsoleDevice.maxPendingInput)
    }
}
