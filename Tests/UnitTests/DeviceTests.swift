import Testing
import Synchronization
@testable import Devices

final class Recorder: Sendable {
    let bytes = Mutex<[UInt8]>([])
    let edges = Mutex<[Bool]>([])
    let events = Mutex<[String]>([])
}

@Suite struct SerialPortTests {
    let r = Recorder()
    let uart: SerialPort
    init() {
        let r = self.r
        uart = SerialPort(output: { b in r.bytes.withLock { $0 += b } },
                          interrupt: { l in r.edges.withLock { $0.append(l) } })
    }
    typealias Reg = SerialPort.Register

    @Test func transmitsWrittenBytes() {
        for c in "hi\n".utf8 { uart.write(offset: Reg.data, width: 1, value: UInt64(c)) }
        #expect(r.bytes.withLock { $0 } == Array("hi\n".utf8))
        #expect(uart.read(offset: Reg.lineStatus, width: 1) & 0x60 == 0x60) // THR empty, idle
    }

    @Test func divisorLatchDoesNotTransmit() {
        uart.write(offset: Reg.lineControl, width: 1, value: 0x80)
        uart.write(offset: Reg.data, width: 1, value: 0x01)
        uart.write(offset: Reg.interruptEnable, width: 1, value: 0x00)
        #expect(uart.read(offset: Reg.data, width: 1) == 0x01)
        uart.write(offset: Reg.lineControl, width: 1, value: 0x03)
        #expect(r.bytes.withLock { $0 }.isEmpty)
        #expect(uart.read(offset: Reg.lineControl, width: 1) == 0x03)
    }

    @Test func receiveRaisesTheLineAndReadingDrainsIt() {
        uart.write(offset: Reg.interruptEnable, width: 1, value: UInt64(SerialPort.IER.receivedData))
        #expect(r.edges.withLock { $0 }.isEmpty)
        #expect(uart.read(offset: Reg.interruptIdentify, width: 1) & 0x0F == 0x01) // nothing pending
        uart.receive(Array("ab".utf8))
        #expect(r.edges.withLock { $0 } == [true])
        #expect(uart.read(offset: Reg.interruptIdentify, width: 1) & 0x0F == 0x04)
        #expect(uart.read(offset: Reg.lineStatus, width: 1) & 0x01 == 1)
        #expect(uart.read(offset: Reg.data, width: 1) == UInt64(UInt8(ascii: "a")))
        #expect(uart.read(offset: Reg.data, width: 1) == UInt64(UInt8(ascii: "b")))
        #expect(uart.read(offset: Reg.lineStatus, width: 1) & 0x01 == 0)
        #expect(r.edges.withLock { $0 } == [true, false])
    }

    @Test func aFIFOThatNeverEmptiesKeepsBoundedStorage() {
        // Input arrives as fast as the guest reads, so the FIFO never quite empties: every
        // byte still comes out in order, and the storage stays about one FIFO's worth.
        uart.receive([0, 1])
        var expected: UInt8 = 0
        for i in 0..<10_000 {
            uart.receive([UInt8(truncatingIfNeeded: i + 2)])
            #expect(uart.read(offset: Reg.data, width: 1) == UInt64(expected))
            expected &+= 1
            #expect(uart.receiveStorage <= 2 * SerialPort.fifoSize)
        }
    }

    @Test func thrEmptyInterruptFollowsThe16550Rules() {
        uart.write(offset: Reg.interruptEnable, width: 1, value: UInt64(SerialPort.IER.transmitterEmpty))
        #expect(r.edges.withLock { $0 } == [true])                          // enabling with THR empty
        #expect(uart.read(offset: Reg.interruptIdentify, width: 1) & 0x0F == 0x02)
        #expect(r.edges.withLock { $0 } == [true, false])                   // IIR read clears it
        #expect(uart.read(offset: Reg.interruptIdentify, width: 1) & 0x0F == 0x01)
        uart.write(offset: Reg.data, width: 1, value: 0x41)
        #expect(r.edges.withLock { $0 } == [true, false, true])             // byte sent: THR empty again
    }

    @Test func out2GatesTheInterrupt() {
        uart.write(offset: Reg.modemControl, width: 1, value: 0)
        uart.write(offset: Reg.interruptEnable, width: 1, value: 1)
        uart.receive([1])
        #expect(r.edges.withLock { $0 }.isEmpty)
        uart.write(offset: Reg.modemControl, width: 1, value: 0x08)
        #expect(r.edges.withLock { $0 } == [true])
    }

    @Test func fifoOverflowSetsOverrun() {
        #expect(uart.receive([UInt8](repeating: 0x55, count: 100)) == SerialPort.fifoSize)
        #expect(uart.receiveSpace == 0)
        #expect(uart.read(offset: Reg.lineStatus, width: 1) & 0x02 == 0x02)
        #expect(uart.read(offset: Reg.lineStatus, width: 1) & 0x02 == 0)     // cleared by reading LSR
    }

    @Test func loopbackEchoesAndScratchHolds() {
        uart.write(offset: Reg.modemControl, width: 1, value: 0x10 | 0x08)
        uart.write(offset: Reg.data, width: 1, value: 0x5A)
        #expect(r.bytes.withLock { $0 }.isEmpty)
        #expect(uart.read(offset: Reg.data, width: 1) == 0x5A)
        uart.write(offset: Reg.scratch, width: 1, value: 0xA5)
        #expect(uart.read(offset: Reg.scratch, width: 1) == 0xA5)
    }
}

@Suite struct BusTests {
    @Test func routesByOffsetAndAnswersUnknownWithAllOnes() throws {
        let r = Recorder()
        let uart = SerialPort(output: { b in r.bytes.withLock { $0 += b } }, interrupt: { _ in })
        let bus = try Bus(name: "ports", ranges: [.init(base: 0x3F8, length: 8, device: uart),
                                                  .init(base: 0x80, length: 1, device: NullDevice())],
                          report: { m in r.events.withLock { $0.append(m) } })
        bus.write(0x3F8, width: 1, value: 0x4B)
        #expect(r.bytes.withLock { $0 } == [0x4B])
        bus.write(0x3FF, width: 1, value: 0x77)
        #expect(bus.read(0x3FF, width: 1) == 0x77)              // scratch register: offset 7
        #expect(bus.read(0x2F8, width: 1) == 0xFF)
        #expect(bus.read(0x2F8, width: 2) == 0xFFFF)
        #expect(bus.read(0x2F8, width: 4) == 0xFFFF_FFFF)
        #expect(bus.read(0x2F8, width: 8) == UInt64.max)
        bus.write(0x2F8, width: 1, value: 1)
        bus.write(0xCF8, width: 4, value: 0x8000_0000)
        #expect(r.events.withLock { $0 }.count == 2)            // each unknown address logged once
        #expect(bus.unknownAddresses == [0x2F8, 0xCF8])
        #expect(bus.read(0x80, width: 1) == 0)
    }

    @Test func unknownAddressNoticesStopAtTheLimit() throws {
        let notices = Mutex<[String]>([])
        let bus = try Bus(name: "mmio", ranges: [], report: { line in notices.withLock { $0.append(line) } })
        for a in 0..<UInt64(1000) { bus.write(0xFEE0_0000 + a, width: 1, value: 0xFF) }
        for a in 0..<UInt64(1000) { #expect(bus.read(0xFEE0_0000 + a, width: 1) == 0xFF) }
        let lines = notices.withLock { $0 }
        #expect(lines.count == Bus.noticedAddressLimit + 1)
        #expect(lines.last?.contains("more than \(Bus.noticedAddressLimit) unknown addresses") == true)
        #expect(bus.unknownAddresses.count == Bus.noticedAddressLimit)
    }

    @Test func overlappingRangesAreRefused() {
        #expect(throws: Bus.Error.self) {
            try Bus(name: "x", ranges: [.init(base: 0x10, length: 8, device: NullDevice()),
                                        .init(base: 0x14, length: 8, device: NullDevice())], report: { _ in })
        }
    }
}

@Suite struct PowerDeviceTests {
    @Test func i8042ResetCommand() {
        let r = Recorder()
        let kbd = I8042(onReset: { r.events.withLock { $0.append("reset") } })
        #expect(kbd.read(offset: 4, width: 1) & 0x02 == 0)      // input buffer empty: kb_wait ends
        kbd.write(offset: 4, width: 1, value: 0xAA)
        kbd.write(offset: 0, width: 1, value: 0xFE)
        #expect(r.events.withLock { $0 }.isEmpty)
        kbd.write(offset: 4, width: 1, value: 0xFE)
        #expect(r.events.withLock { $0 } == ["reset"])
    }

    @Test func acpiSleepControlPowersOffOnlyForS5() {
        let r = Recorder()
        let dev = ACPIPowerDevice(s5SleepType: 5, resetValue: 1,
                                  onPowerOff: { r.events.withLock { $0.append("off") } },
                                  onReset: { r.events.withLock { $0.append("reset") } })
        dev.write(offset: 0, width: 1, value: 5 << 2)              // SLP_TYP without SLP_EN
        dev.write(offset: 0, width: 1, value: (3 << 2) | 0x20)     // S3: not supported, ignored
        #expect(r.events.withLock { $0 }.isEmpty)
        dev.write(offset: 0, width: 1, value: (5 << 2) | 0x20)
        #expect(r.events.withLock { $0 } == ["off"])
        dev.write(offset: 2, width: 1, value: 2)
        dev.write(offset: 2, width: 1, value: 1)
        #expect(r.events.withLock { $0 } == ["off", "reset"])
    }
}

@Suite struct BootTimerTests {
    final class Count: Sendable { let n = Mutex(0) }

    @Test func onlyTheMagicByteAtOffsetZeroIsTheMarker() {
        let count = Count()
        let timer = BootTimer(onMarker: { count.n.withLock { $0 += 1 } })
        timer.write(offset: 0, width: 1, value: 122)
        timer.write(offset: 1, width: 1, value: 123)
        #expect(count.n.withLock { $0 } == 0)
        timer.write(offset: 0, width: 1, value: 123)
        timer.write(offset: 0, width: 4, value: 0xFFFF_FF7B)   // low byte is what a byte port sees
        #expect(count.n.withLock { $0 } == 2)
        #expect(timer.read(offset: 0, width: 1) == 0)
    }
}
