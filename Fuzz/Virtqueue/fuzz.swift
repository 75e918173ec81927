// libFuzzer target for the split virtqueue: a hostile driver controls the queue
// configuration and every byte of guest RAM. Built and run by Fuzz/run-virtqueue-fuzz.sh.
//
// Input: size u16, descriptor table u16, available ring u16, used ring u16, flags u8
// (bit 0: EVENT_IDX), then the contents of guest RAM from address 0 (the hole skipped).
// Any crash, sanitizer report or failed precondition is a bug in Virtqueue.
import GuestMemory
import Virtio

private let headerSize = 9
/// 64 KiB of guest-physical space: 32 KiB of RAM, a 16 KiB hole, 16 KiB of RAM.
private let memory = try! GuestMemory(layout: [(0, 0x8000), (0xC000, 0x4000)])

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    runFuzzInput(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Loads `input` into guest RAM, configures a queue from its header, then serves chains
/// like a device until the queue is empty or rejects what the driver wrote.
private func runFuzzInput(_ input: [UInt8]) {
    guard input.count >= headerSize else { return }
    let ram = Array(input[headerSize...])
    for region in memory.regions {
        try! memory.zero(at: region.base, length: region.size)
        let start = Int(region.base.raw)
        let end = min(Int(region.end), ram.count)
        if start < end { try! memory.write(ram[start..<end], at: region.base) }
    }
    var queue = Virtqueue(maxSize: 256)
    queue.size = input.get(UInt16.self, at: 0)!
    queue.descriptorTable = GuestAddress(UInt64(input.get(UInt16.self, at: 2)!))
    queue.availableRing = GuestAddress(UInt64(input.get(UInt16.self, at: 4)!))
    queue.usedRing = GuestAddress(UInt64(input.get(UInt16.self, at: 6)!))
    queue.eventIndexEnabled = input[8] & 1 != 0
    queue.isReady = true
    do {
        try queue.validate(memory: memory)
        var chains = 0
        while chains < 4096, let chain = try queue.nextChain(memory: memory) {
            for buffer in chain.readable + chain.writable {
                precondition(memory.contains(buffer.address, length: UInt64(buffer.length)), "buffer outside RAM")
            }
            precondition(chain.readableLength + chain.writableLength <= UInt64(UInt32.max), "chain too long")
            precondition(chain.headIndex < queue.size, "head outside queue")
            // The device's writes may land on the rings themselves; the queue must cope.
            let written = Int(min(chain.writableLength, 64))
            try! chain.write([UInt8](repeating: 0xA5, count: written), to: memory)
            try queue.complete(headIndex: chain.headIndex, writtenLength: UInt32(written), memory: memory)
            _ = try queue.needsInterrupt(memory: memory)
            chains += 1
        }
    } catch {
        _ = error.description    // every failure is a typed VirtqueueError with a message
    }
}
