import Synchronization
import Testing
@testable import Devices

@Suite struct FirmwareConfigTests {
    let fw = FirmwareConfig(cpus: 3, ramBytes: 128 << 20)
    typealias Key = FirmwareConfig.Key

    func select(_ key: UInt16, width: Int = 2) { fw.write(offset: FirmwareConfig.selectorOffset, width: width, value: UInt64(key)) }
    func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(fw.read(offset: FirmwareConfig.dataOffset, width: 1)) } }

    @Test func answersTheKeysTestKernelsRead() {
        select(Key.signature)
        #expect(bytes(4) == Array("QEMU".utf8))
        select(Key.id)
        #expect(bytes(4) == [1, 0, 0, 0])                // traditional interface only, no DMA
        select(Key.cpuCount)
        #expect(bytes(2) == [3, 0])
        select(Key.maxCPUs)
        #expect(bytes(2) == [3, 0])
        select(Key.ramSize)
        #expect(bytes(8) == [0, 0, 0, 8, 0, 0, 0, 0])    // 128 MiB, little-endian
        select(Key.fileDirectory)
        #expect(bytes(4) == [0, 0, 0, 0])                // no files
        select(Key.uuid)
        #expect(bytes(16) == [UInt8](repeating: 0, count: 16))
    }

    @Test func readsPastTheEndAndUnknownKeysAreZeros() {
        select(Key.signature)
        #expect(bytes(10) == Array("QEMU".utf8) + [0, 0, 0, 0, 0, 0])
        for key: UInt16 in [0x11, 0x8005, 0x3FFF, 0xFFFF] {
            select(key)
            #expect(bytes(8) == [UInt8](repeating: 0, count: 8), "key 0x\(String(key, radix: 16))")
        }
        // Selecting again starts the item over; the write-channel bit does not change the item.
        select(Key.cpuCount)
        _ = bytes(1)
        select(Key.cpuCount | 0x4000)
        #expect(bytes(2) == [3, 0])
        // A byte write to the selector picks the key in its low byte.
        select(0x1205, width: 1)
        #expect(bytes(2) == [3, 0])
    }

    @Test func widerReadsReturnTheNextBytesAndTheSelectorReadsZero() {
        select(Key.signature)
        #expect(fw.read(offset: FirmwareConfig.dataOffset, width: 2) == 0x4551)   // "QE"
        #expect(fw.read(offset: FirmwareConfig.dataOffset, width: 4) == 0x554D)   // "MU", then past the end
        #expect(fw.read(offset: FirmwareConfig.selectorOffset, width: 2) == 0)
        // Writes to the data register change nothing.
        fw.write(offset: FirmwareConfig.dataOffset, width: 1, value: 0x41)
        select(Key.signature)
        #expect(bytes(4) == Array("QEMU".utf8))
    }

    @Test func aHugeCPUCountIsClamped() {
        let big = FirmwareConfig(cpus: 100_000, ramBytes: 0)
        big.write(offset: 0, width: 2, value: UInt64(Key.cpuCount))
        #expect((0..<2).map { _ in big.read(offset: 1, width: 1) } == [0xFF, 0xFF])
    }
}

@Suite struct TestDevicesTests {
    @Test func debugExitStatusIsQEMUs() {
        #expect(DebugExitDevice.exitStatus(forValue: 0) == 1)
        #expect(DebugExitDevice.exitStatus(forValue: 1) == 3)
        #expect(DebugExitDevice.exitStatus(forValue: 5) == 11)
        #expect(DebugExitDevice.exitStatus(forValue: 0x7F) == 0xFF)
        #expect(DebugExitDevice.exitStatus(forValue: 0x80) == 1)          // (0x80 << 1) | 1 = 0x101, modulo 256
        #expect(DebugExitDevice.exitStatus(forValue: UInt64.max) == 0xFF)
        let seen = Mutex<[UInt64]>([])
        let device = DebugExitDevice(onExit: { v in seen.withLock { $0.append(v) } })
        device.write(offset: 0, width: 4, value: 0x1234_5678)
        device.write(offset: 3, width: 1, value: 2)
        #expect(seen.withLock { $0 } == [0x1234_5678, 2])
        #expect(device.read(offset: 0, width: 4) == 0)
    }

    @Test func scratchRegisterIsSharedByBothWindowsByteByByte() {
        let register = TestScratchRegister()
        let wide = register.window(), bytes = register.window()
        wide.write(offset: 0, width: 4, value: 0xDEAD_BEEF)
        #expect(bytes.read(offset: 0, width: 4) == 0xDEAD_BEEF)
        #expect(bytes.read(offset: 2, width: 1) == 0xAD)
        bytes.write(offset: 1, width: 1, value: 0x11)
        #expect(wide.read(offset: 0, width: 4) == 0xDEAD_11EF)
        wide.write(offset: 2, width: 2, value: 0x2233)
        #expect(wide.read(offset: 0, width: 4) == 0x2233_11EF)
        // Bytes past the 4-byte register are dropped and read as zero.
        wide.write(offset: 3, width: 4, value: 0xAABB_CCDD)
        #expect(wide.read(offset: 0, width: 4) == 0xDD33_11EF)
        #expect(wide.read(offset: 3, width: 4) == 0xDD)
        #expect(wide.read(offset: 9, width: 8) == 0)
    }

    @Test func interruptLinesFollowByteWrites() {
        let calls = Mutex<[String]>([])
        let lines = TestInterruptLines(setLine: { n, level in calls.withLock { $0.append("\(n)=\(level)") } })
        lines.write(offset: 0x0E, width: 1, value: 1)
        lines.write(offset: 0x0E, width: 1, value: 0)
        lines.write(offset: 23, width: 1, value: 0x80)
        lines.write(offset: 4, width: 4, value: 0x100)   // only the low byte counts: 0
        lines.write(offset: 24, width: 1, value: 1)      // not a line
        #expect(calls.withLock { $0 } == ["14=true", "14=false", "23=true", "4=false"])
        #expect(lines.read(offset: 0, width: 1) == 0)
    }

    @Test func flushPageTakesThirtyTwoBitAddressesOnly() {
        let flushed = Mutex<[UInt64]>([])
        let port = TestFlushPage(flush: { a in flushed.withLock { $0.append(a) } })
        port.write(offset: 0, width: 4, value: 0x0012_3456)
        port.write(offset: 0, width: 1, value: 0x99)                   // QEMU ignores other widths
        port.write(offset: 0, width: 4, value: 0xFFFF_FFFF_0000_1000)
        #expect(flushed.withLock { $0 } == [0x12_3456, 0x1000])
    }

    @Test func deviceMemoryReadsBackAndStopsAtItsEnd() {
        let mem = TestDeviceMemory()
        mem.write(offset: 0x10, width: 8, value: 0x0102_0304_0506_0708)
        #expect(mem.read(offset: 0x10, width: 8) == 0x0102_0304_0506_0708)
        #expect(mem.read(offset: 0x13, width: 2) == 0x0405)
        let last = UInt64(TestDeviceMemory.size - 2)
        mem.write(offset: last, width: 4, value: 0xAABB_CCDD)
        #expect(mem.read(offset: last, width: 4) == 0xCCDD)
        mem.write(offset: UInt64.max - 2, width: 8, value: 1)          // far outside: ignored, no crash
        #expect(mem.read(offset: UInt64.max - 2, width: 8) == 0)
    }
}
