// libFuzzer target for the virtio devices' request parsing: a hostile driver posts
// well-formed descriptor chains whose buffers (placement, sizes and contents) come from the
// input. Built and run by Fuzz/run-device-fuzz.sh. The in-process counterpart with a
// pseudo-random generator is Tests/VirtioTests/DeviceFuzzTests.swift.
//
// Input: device u8 (mod 6: blk, net tx, net rx, vsock, console, rng), chain count u8, then
// per chain: buffer count u8 (bit 7: a vsock or console rx chain), readable count u8, and per
// buffer address u32 (0x2000 + it mod 184 KiB: past the rings, possibly in the hole or across
// a region edge) and length u16; the remaining bytes fill the buffers in order (readable ones
// first: headers), and up to 4 KiB after that are host-side data (net rx frames, console
// input, a vsock host stream).
// Checked: process returns or throws VirtqueueError (only with a buffer outside RAM), no
// byte outside the posted writable buffers and used rings changes, used elements name
// outstanding chains and never exceed a chain's writable length. A violation prints a
// "device fuzz:" line and aborts, which libFuzzer reports as a crash.
#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import Virtio
import VirtioDevices

/// Region A [0, 64 KiB), hole [64, 128 KiB), region B [128, 192 KiB); rings of queue q at
/// q * 0x800 (descriptors +0, avail +0x400, used +0x500).
private let memory = try! GuestMemory(layout: [(0, 0x10000), (0x20000, 0x10000)])
private let queueSize: UInt16 = 64
// libFuzzer calls the target from one thread.
nonisolated(unsafe) private let saved = memory.regions.map { UnsafeMutableRawBufferPointer.allocate(byteCount: Int($0.size), alignment: 16) }
nonisolated(unsafe) private let blockBackend = MemoryBlockBackend(size: 64 * 512)

private final class Stream: VsockHostStream {
    var data: [UInt8]
    init(_ data: [UInt8]) { self.data = data }
    func write(_ bytes: ArraySlice<UInt8>) -> Int? { bytes.count / 2 }
    func read(max: Int) -> [UInt8]? {
        if data.isEmpty { return nil }
        defer { data.removeFirst(min(max, data.count)) }
        return Array(data.prefix(max))
    }
    func shutdownWrite() {}
    func setReadInterest(_ enabled: Bool) {}
    func setWriteInterest(_ enabled: Bool) {}
    func accepted(localPort: UInt32) {}
    func close() {}
}

private final class Host: VsockHost {
    var streams: [Stream] = []
    func connect(hostPort: UInt32) -> (any VsockHostStream)? {
        guard hostPort & 1 == 0 else { return nil }
        let stream = Stream([UInt8](repeating: UInt8(truncatingIfNeeded: hostPort), count: Int(hostPort % 3000)))
        streams.append(stream)
        return stream
    }
}

private struct Reader {
    let bytes: [UInt8]
    var at = 0
    mutating func u8() -> UInt8 { defer { at += 1 }; return at < bytes.count ? bytes[at] : 0 }
    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func rest(_ n: Int) -> [UInt8] {
        let start = min(at, bytes.count), end = min(start + n, bytes.count)
        at = end
        return Array(bytes[start..<end]) + [UInt8](repeating: 0, count: n - (end - start))
    }
}

private struct Chain {
    var buffers: [(address: UInt64, length: UInt32, writable: Bool)]
    var writableLength: UInt64
}

/// A failed check: prints why (-O drops precondition messages) and aborts, which libFuzzer
/// reports as a crash.
private func fail(_ message: String) -> Never {
    let line = Array("device fuzz: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    abort()
}

private func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fail(message()) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    runFuzzInput(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

private func runFuzzInput(_ input: [UInt8]) {
    var reader = Reader(bytes: input)
    let kind = Int(reader.u8() % 6)
    let queueCount = kind == 3 ? 3 : 2
    let drivers = (0..<queueCount).map { q -> (Virtqueue, UInt64) in
        let base = UInt64(q) * 0x800
        try! memory.zero(at: GuestAddress(base), length: 0x800)
        var queue = Virtqueue(maxSize: 256)
        queue.size = queueSize
        queue.descriptorTable = GuestAddress(base)
        queue.availableRing = GuestAddress(base + 0x400)
        queue.usedRing = GuestAddress(base + 0x500)
        queue.isReady = true
        return (queue, base)
    }
    var queues = drivers.map(\.0)
    // The queue the chains go to: the device's request queue (transmit where there are two).
    let mainQueue = [0, 1, 0, 1, 1, 0][kind]
    var outstanding: [[UInt16: Chain]] = Array(repeating: [:], count: queueCount)
    var availableIndex = [UInt16](repeating: 0, count: queueCount)
    var nextDescriptor = [UInt16](repeating: 0, count: queueCount)
    var hasBad = [Bool](repeating: false, count: queueCount)
    var writableRanges: [(UInt64, UInt64)] = []

    var specs: [(queue: Int, buffers: [(UInt64, UInt32, Bool)])] = []
    for _ in 0..<Int(reader.u8() % 8) + 1 {
        let countByte = reader.u8()
        let count = Int(countByte % 4) + 1
        let readable = Int(reader.u8()) % (count + 1)
        let queue = (kind == 3 || kind == 4) && countByte & 0x80 != 0 ? 0 : mainQueue
        let buffers = (0..<count).map { i in
            (0x2000 + UInt64(reader.u32() % 0x2E000), UInt32(reader.u16()), i >= readable)
        }
        specs.append((queue, buffers))
    }
    // Post the chains: contents from the rest of the input, readable buffers first.
    for spec in specs {
        let q = spec.queue
        guard Int(nextDescriptor[q]) + spec.buffers.count <= Int(queueSize) else { continue }
        let head = nextDescriptor[q]
        var chain = Chain(buffers: [], writableLength: 0)
        for (i, (address, length, writable)) in spec.buffers.enumerated() {
            if memory.contains(GuestAddress(address), length: UInt64(length)) {
                try! memory.write(reader.rest(Int(length)), at: GuestAddress(address))
            } else {
                hasBad[q] = true
            }
            if writable { writableRanges.append((address, UInt64(length))); chain.writableLength += UInt64(length) }
            chain.buffers.append((address, length, writable))
            let index = nextDescriptor[q] + UInt16(i)
            let entry = GuestAddress(drivers[q].1 + 16 * UInt64(index))
            let last = i == spec.buffers.count - 1
            try! memory.store(address, at: entry)
            try! memory.store(length, at: entry.adding(8))
            try! memory.store(UInt16((writable ? 2 : 0) | (last ? 0 : 1)), at: entry.adding(12))
            try! memory.store(last ? 0 : index + 1, at: entry.adding(14))
        }
        nextDescriptor[q] += UInt16(spec.buffers.count)
        let avail = drivers[q].1 + 0x400
        try! memory.store(head, at: GuestAddress(avail + 4 + 2 * UInt64(availableIndex[q] % queueSize)))
        availableIndex[q] += 1
        try! memory.store(availableIndex[q], at: GuestAddress(avail + 2))
        outstanding[q][head] = chain
    }

    var usedSeen = [UInt16](repeating: 0, count: queueCount)
    func run(_ q: Int, _ body: (inout Virtqueue) throws -> Bool) {
        for (i, region) in memory.regions.enumerated() {
            saved[i].copyMemory(from: UnsafeRawBufferPointer(try! memory.hostBuffer(at: region.base, length: region.size)))
        }
        do {
            _ = try body(&queues[q])
        } catch let error as VirtqueueError {
            check(hasBad[q], "queue \(q) threw \(error) with every buffer in RAM")
        } catch {
            fail("queue \(q) threw \(error), not a VirtqueueError")
        }
        var exempt = writableRanges
        for d in drivers { exempt.append((d.1 + 0x500, 6 + 8 * UInt64(queueSize))) }
        for (i, region) in memory.regions.enumerated() {
            let host = try! memory.hostBuffer(at: region.base, length: region.size)
            for (address, length) in exempt {
                let start = max(address, region.base.raw), end = min(address + length, region.end)
                guard start < end else { continue }
                let o = Int(start - region.base.raw), n = Int(end - start)
                UnsafeMutableRawBufferPointer(rebasing: saved[i][o..<o + n])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: host[o..<o + n]))
            }
            if memcmp(saved[i].baseAddress!, host.baseAddress!, host.count) != 0 {
                let first = (0..<host.count).first { saved[i][$0] != host[$0] }!
                fail("queue \(q): guest byte 0x\(String(region.base.raw + UInt64(first), radix: 16)) outside the writable buffers and used rings changed")
            }
        }
        for (qi, d) in drivers.enumerated() {
            let used = try! memory.load(UInt16.self, at: GuestAddress(d.1 + 0x502))
            while usedSeen[qi] != used {
                let element = GuestAddress(d.1 + 0x504 + 8 * UInt64(usedSeen[qi] % queueSize))
                let id = try! memory.load(UInt32.self, at: element)
                let length = try! memory.load(UInt32.self, at: element.adding(4))
                guard id < UInt32(queueSize), let chain = outstanding[qi].removeValue(forKey: UInt16(id)) else {
                    fail("queue \(qi) used head \(id), which was not outstanding")
                }
                check(UInt64(length) <= chain.writableLength, "used length \(length) > writable \(chain.writableLength)")
                usedSeen[qi] &+= 1
            }
        }
    }

    let tail = reader.rest(min(4096, max(0, input.count - reader.at)))
    switch kind {
    case 0:
        let device = BlockDevice(backend: blockBackend, serial: "fuzz")
        device.activate(features: tail.first.map { UInt64($0 & 1) << 9 } ?? 0, memory: memory)
        run(0) { try device.process(queue: 0, &$0, memory: memory) }
    case 1, 2:
        let backend = MemoryNetworkBackend()
        let device = NetworkDevice(backend: backend, mac: MACAddress("52:54:00:12:34:56")!)
        device.activate(features: VirtioFeature.version1, memory: memory)
        if kind == 1 {
            run(1) { try device.process(queue: 1, &$0, memory: memory) }
        } else {
            var rest = tail[...]
            while rest.count >= 2 {
                let n = Int(rest.first!) * 8
                rest = rest.dropFirst()
                backend.deliver(Array(rest.prefix(n)))
                rest = rest.dropFirst(n)
            }
            run(0) { try device.process(queue: 0, &$0, memory: memory) }
            run(0) { try device.process(queue: 0, &$0, memory: memory) }
        }
    case 3:
        let host = Host()
        let device = VsockDevice(guestCID: 3, host: host)
        device.activate(features: VirtioFeature.version1, memory: memory)
        run(1) { try device.process(queue: 1, &$0, memory: memory) }
        for stream in host.streams { device.hostReadable(stream) }
        _ = device.hostConnected(stream: Stream(tail), guestPort: 1)
        run(0) { try device.process(queue: 0, &$0, memory: memory) }
        device.reset()
    case 4:
        let device = ConsoleDevice(output: { _ in })
        device.enqueueInput(tail)
        run(1) { try device.process(queue: 1, &$0, memory: memory) }
        run(0) { try device.process(queue: 0, &$0, memory: memory) }
    default:
        let device = EntropyDevice()
        run(0) { try device.process(queue: 0, &$0, memory: memory) }
    }
}
