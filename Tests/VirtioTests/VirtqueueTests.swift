import GuestMemory
import Testing
import TestSupport
import Virtio

// Guest RAM for every test: two 64 KiB regions with a 64 KiB hole between them, so a
// buffer can point into the hole or straddle a region's end.
private let regionA: (base: UInt64, size: UInt64) = (0x0, 0x10000)
private let hole: UInt64 = 0x10000
private let regionB: (base: UInt64, size: UInt64) = (0x20000, 0x10000)
private let queueSize: UInt16 = 8

private func makeMemory() throws -> GuestMemory { try GuestMemory(layout: [regionA, regionB]) }

/// A driver with an 8-entry queue in region A and its ready device-side queue.
private func makeDriver(eventIndex: Bool = false) throws -> (FakeDriver, Virtqueue, GuestMemory) {
    let memory = try makeMemory()
    let driver = try FakeDriver(memory: memory, size: queueSize, descriptorTable: 0x1000, availableRing: 0x2000, usedRing: 0x3000)
    return (driver, driver.makeQueue(eventIndex: eventIndex), memory)
}

/// Every byte of guest RAM, to prove a rejected request wrote nothing.
private func snapshot(_ memory: GuestMemory) throws -> [[UInt8]] {
    try memory.regions.map { try memory.read(at: $0.base, count: Int($0.size)) }
}

/// Asserts `nextChain` throws exactly `expected`, twice (nothing was consumed), and that
/// guest RAM is byte-for-byte unchanged.
private func expectRejected(_ expected: VirtqueueError, _ queue: inout Virtqueue, _ memory: GuestMemory,
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
    let before = try snapshot(memory)
    let consumed = queue.nextAvailableIndex
    for _ in 0..<2 {
        do {
            let chain = try queue.nextChain(memory: memory)
            Issue.record("expected \(expected), got \(String(describing: chain))", sourceLocation: sourceLocation)
        } catch {
            #expect(error == expected, sourceLocation: sourceLocation)
        }
    }
    #expect(queue.nextAvailableIndex == consumed, sourceLocation: sourceLocation)
    #expect(try snapshot(memory) == before, "guest memory changed", sourceLocation: sourceLocation)
}

private func readable(_ address: UInt64, _ length: UInt32) -> Descriptor {
    Descriptor(address: GuestAddress(address), length: length, isWriteOnly: false)
}

private func writable(_ address: UInt64, _ length: UInt32) -> Descriptor {
    Descriptor(address: GuestAddress(address), length: length, isWriteOnly: true)
}

// MARK: Well-formed queues

@Test func singleDescriptorChain() throws {
    var (driver, queue, memory) = try makeDriver()
    try queue.validate(memory: memory)
    #expect(try queue.nextChain(memory: memory) == nil)
    let head = try driver.addChain([.readable(0x4000, 64)])
    let chain = try #require(try queue.nextChain(memory: memory))
    #expect(chain == DescriptorChain(headIndex: head, readable: [readable(0x4000, 64)], writable: []))
    #expect(try queue.nextChain(memory: memory) == nil)
}

@Test func multiDescriptorChainKeepsReadableThenWritableOrder() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.addChain([.readable(0x4000, 16), .readable(0x4100, 8), .writable(0x20000, 512), .writable(0x2FF00, 256)])
    let chain = try #require(try queue.nextChain(memory: memory))
    #expect(chain.headIndex == 0)
    #expect(chain.readable == [readable(0x4000, 16), readable(0x4100, 8)])
    #expect(chain.writable == [writable(0x20000, 512), writable(0x2FF00, 256)])
}

@Test func buffersAtRegionEdgesAndEmptyBuffersAreAccepted() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.addChain([.readable(0x0, 0), .readable(regionA.size - 16, 16), .writable(regionB.base, UInt32(regionB.size))])
    let chain = try #require(try queue.nextChain(memory: memory))
    #expect(chain.readable == [readable(0x0, 0), readable(0xFFF0, 16)])
    #expect(chain.writable == [writable(0x20000, 0x10000)])
}

@Test func indirectChain() throws {
    var (driver, queue, memory) = try makeDriver()
    let head = try driver.addIndirectChain([.readable(0x4000, 16), .writable(0x20000, 512), .writable(0x20200, 1)],
                                           tableAddress: 0x5000)
    let chain = try #require(try queue.nextChain(memory: memory))
    #expect(chain == DescriptorChain(headIndex: head, readable: [readable(0x4000, 16)],
                                     writable: [writable(0x20000, 512), writable(0x20200, 1)]))
}

@Test func directDescriptorsFollowedByIndirectTable() throws {
    // INDIRECT cannot carry NEXT, so it may end a chain of direct descriptors.
    var (driver, queue, memory) = try makeDriver()
    try driver.writeDescriptor(0, address: 0x4000, length: 16, flags: FakeDriver.flagNext, next: 3)
    try driver.writeDescriptor(3, address: 0x5000, length: 32, flags: FakeDriver.flagIndirect, next: 0)
    try driver.writeDescriptor(0, address: 0x4010, length: 4, flags: FakeDriver.flagNext, next: 1, table: GuestAddress(0x5000))
    try driver.writeDescriptor(1, address: 0x20000, length: 64, flags: FakeDriver.flagWrite, next: 0, table: GuestAddress(0x5000))
    try driver.makeAvailable(head: 0)
    let chain = try #require(try queue.nextChain(memory: memory))
    #expect(chain.readable == [readable(0x4000, 16), readable(0x4010, 4)])
    #expect(chain.writable == [writable(0x20000, 64)])
}

@Test func completeWritesUsedElementsAndIndex() throws {
    var (driver, queue, memory) = try makeDriver()
    let first = try driver.addChain([.writable(0x20000, 100)])
    let second = try driver.addChain([.readable(0x4000, 8), .writable(0x20100, 100)])
    let a = try #require(try queue.nextChain(memory: memory))
    let b = try #require(try queue.nextChain(memory: memory))
    #expect([a.headIndex, b.headIndex] == [first, second])
    // Out of order completion, as devices may do.
    try queue.complete(headIndex: b.headIndex, writtenLength: 7, memory: memory)
    #expect(try driver.usedIndex() == 1)
    try queue.complete(headIndex: a.headIndex, writtenLength: 100, memory: memory)
    #expect(try driver.usedIndex() == 2)
    #expect(try driver.usedElement(0) == (UInt32(second), 7))
    #expect(try driver.usedElement(1) == (UInt32(first), 100))
    #expect(queue.nextUsedIndex == 2)
}

@Test func availableAndUsedIndicesWrapAround() throws {
    var (driver, queue, memory) = try makeDriver()
    // Walk both sides to 65533, so the next four entries cross 65535 -> 0.
    for _ in 0..<65533 {
        try driver.addChain([.readable(0x4000, 1)])
        let chain = try #require(try queue.nextChain(memory: memory))
        try queue.complete(headIndex: chain.headIndex, writtenLength: 0, memory: memory)
    }
    #expect(queue.nextAvailableIndex == 65533)
    #expect(try driver.usedIndex() == 65533)
    var heads: [UInt16] = []
    for i in 0..<4 { heads.append(try driver.addChain([.writable(0x20000 + UInt64(i) * 0x100, 0x100)], publish: false)) }
    try driver.publish()
    #expect(driver.availableIndex == 1)
    for (i, head) in heads.enumerated() {
        let chain = try #require(try queue.nextChain(memory: memory))
        #expect(chain == DescriptorChain(headIndex: head, readable: [], writable: [writable(0x20000 + UInt64(i) * 0x100, 0x100)]))
        try queue.complete(headIndex: head, writtenLength: UInt32(i), memory: memory)
    }
    #expect(try queue.nextChain(memory: memory) == nil)
    #expect(queue.nextAvailableIndex == 1)
    #expect(try driver.usedIndex() == 1)
    for (i, position) in [UInt16(65533), 65534, 65535, 0].enumerated() {
        #expect(try driver.usedElement(position) == (UInt32(heads[i]), UInt32(i)))
    }
}

@Test func needsInterruptHonorsNoInterruptFlag() throws {
    var (driver, queue, memory) = try makeDriver()
    #expect(try queue.needsInterrupt(memory: memory) == false)      // nothing completed yet
    try driver.addChain([.writable(0x20000, 8)])
    try queue.complete(headIndex: try #require(try queue.nextChain(memory: memory)).headIndex, writtenLength: 8, memory: memory)
    #expect(try queue.needsInterrupt(memory: memory))
    #expect(try queue.needsInterrupt(memory: memory) == false)      // already reported
    try driver.setAvailableFlags(FakeDriver.availableFlagNoInterrupt)
    try driver.addChain([.writable(0x20000, 8)])
    try queue.complete(headIndex: try #require(try queue.nextChain(memory: memory)).headIndex, writtenLength: 8, memory: memory)
    #expect(try queue.needsInterrupt(memory: memory) == false)
}

@Test func needsInterruptFollowsUsedEventWithEventIndex() throws {
    var (driver, queue, memory) = try makeDriver(eventIndex: true)
    // The flag is ignored with EVENT_IDX.
    try driver.setAvailableFlags(FakeDriver.availableFlagNoInterrupt)
    func completeOne() throws {
        try driver.addChain([.writable(0x20000, 8)])
        let chain = try #require(try queue.nextChain(memory: memory))
        try queue.complete(headIndex: chain.headIndex, writtenLength: 8, memory: memory)
    }
    try driver.setUsedEvent(0)
    try completeOne()                                        // used idx 0 -> 1 passes 0
    #expect(try queue.needsInterrupt(memory: memory))
    try completeOne()                                        // 1 -> 2, event 0 already passed
    #expect(try queue.needsInterrupt(memory: memory) == false)
    try driver.setUsedEvent(3)
    try completeOne()                                        // 2 -> 3, waits for 3 -> 4
    #expect(try queue.needsInterrupt(memory: memory) == false)
    try completeOne()
    try completeOne()                                        // 3 -> 5 in one batch passes 3
    #expect(try queue.needsInterrupt(memory: memory))
    try driver.setUsedEvent(100)
    try completeOne()
    #expect(try queue.needsInterrupt(memory: memory) == false)
}

@Test func needsInterruptWithEventIndexAcrossWrap() throws {
    var (driver, queue, memory) = try makeDriver(eventIndex: true)
    for _ in 0..<65534 {
        try driver.addChain([.readable(0x4000, 1)])
        let chain = try #require(try queue.nextChain(memory: memory))
        try queue.complete(headIndex: chain.headIndex, writtenLength: 0, memory: memory)
    }
    try driver.setUsedEvent(65533)
    _ = try queue.needsInterrupt(memory: memory)
    try driver.setUsedEvent(65535)
    for _ in 0..<3 {                                         // used idx 65534 -> 1 passes 65535
        try driver.addChain([.readable(0x4000, 1)])
        let chain = try #require(try queue.nextChain(memory: memory))
        try queue.complete(headIndex: chain.headIndex, writtenLength: 0, memory: memory)
    }
    #expect(try driver.usedIndex() == 1)
    #expect(try queue.needsInterrupt(memory: memory))
}

@Test func nextChainPublishesAvailableEventWithEventIndex() throws {
    var (driver, queue, memory) = try makeDriver(eventIndex: true)
    try driver.addChain([.readable(0x4000, 1)])
    try driver.addChain([.readable(0x4000, 1)])
    _ = try queue.nextChain(memory: memory)
    _ = try queue.nextChain(memory: memory)
    #expect(try queue.nextChain(memory: memory) == nil)
    #expect(try driver.availableEvent() == 2)
}

@Test func resetRestoresInitialState() throws {
    var (driver, queue, memory) = try makeDriver(eventIndex: true)
    try driver.addChain([.writable(0x20000, 8)])
    try queue.complete(headIndex: try #require(try queue.nextChain(memory: memory)).headIndex, writtenLength: 1, memory: memory)
    queue.reset()
    #expect(queue.maxSize == 256 && queue.size == 256 && !queue.isReady && !queue.eventIndexEnabled)
    #expect(queue.descriptorTable == GuestAddress(0) && queue.availableRing == GuestAddress(0) && queue.usedRing == GuestAddress(0))
    #expect(queue.nextAvailableIndex == 0 && queue.nextUsedIndex == 0)
    try expectRejected(.notReady, &queue, memory)
}

@Test func configurationChangeIsValidatedAgain() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.addChain([.readable(0x4000, 1)])
    _ = try queue.nextChain(memory: memory)
    queue.usedRing = GuestAddress(hole)
    try expectRejected(.areaOutsideMemory(.usedRing, address: hole, length: 70), &queue, memory)
}

// MARK: Queue configuration

@Test func queueThatIsNotReadyIsRejected() throws {
    var (_, queue, memory) = try makeDriver()
    queue.isReady = false
    #expect(throws: VirtqueueError.notReady) { try queue.validate(memory: memory) }
    try expectRejected(.notReady, &queue, memory)
    #expect(throws: VirtqueueError.notReady) { try queue.complete(headIndex: 0, writtenLength: 0, memory: memory) }
    #expect(throws: VirtqueueError.notReady) { try queue.needsInterrupt(memory: memory) }
}

@Test(arguments: [UInt16(0), 3, 6, 255, 512])
func invalidSizeIsRejected(size: UInt16) throws {
    var (_, queue, memory) = try makeDriver()
    queue.size = size
    let expected = VirtqueueError.invalidSize(size: size, maxSize: 256)
    #expect(throws: expected) { try queue.validate(memory: memory) }
    try expectRejected(expected, &queue, memory)
}

@Test func sizeEqualToMaxSizeAndSizeOneAreAccepted() throws {
    let memory = try makeMemory()
    for size: UInt16 in [1, 256] {
        let driver = try FakeDriver(memory: memory, size: size, descriptorTable: 0x4000, availableRing: 0x2000, usedRing: 0x8000)
        try driver.makeQueue(maxSize: 256).validate(memory: memory)
    }
}

@Test(arguments: [
    (VirtqueueError.Area.descriptorTable, UInt64(0x1008), UInt64(16)),
    (.availableRing, 0x2001, 2),
    (.usedRing, 0x3002, 4),
])
func misalignedRingIsRejected(area: VirtqueueError.Area, address: UInt64, alignment: UInt64) throws {
    var (_, queue, memory) = try makeDriver()
    switch area {
    case .descriptorTable: queue.descriptorTable = GuestAddress(address)
    case .availableRing: queue.availableRing = GuestAddress(address)
    case .usedRing: queue.usedRing = GuestAddress(address)
    }
    let expected = VirtqueueError.misaligned(area, address: address, alignment: alignment)
    #expect(throws: expected) { try queue.validate(memory: memory) }
    try expectRejected(expected, &queue, memory)
}

@Test(arguments: [
    (VirtqueueError.Area.descriptorTable, hole, UInt64(128)),                  // in the hole
    (.descriptorTable, 0xFFFF_FFFF_FFFF_FFF0, 128),                             // wraps 2^64
    (.availableRing, 0xFFF0, 22),                                               // crosses into the hole
    (.usedRing, 0x2FFC0, 70),                                                   // runs past the end of RAM
    (.usedRing, 0x4_0000_0000, 70),                                             // far above RAM
])
func ringOutsideMemoryIsRejected(area: VirtqueueError.Area, address: UInt64, length: UInt64) throws {
    var (_, queue, memory) = try makeDriver()
    switch area {
    case .descriptorTable: queue.descriptorTable = GuestAddress(address)
    case .availableRing: queue.availableRing = GuestAddress(address)
    case .usedRing: queue.usedRing = GuestAddress(address)
    }
    let expected = VirtqueueError.areaOutsideMemory(area, address: address, length: length)
    #expect(throws: expected) { try queue.validate(memory: memory) }
    try expectRejected(expected, &queue, memory)
}

@Test func ringEndingExactlyAtRegionEndIsAccepted() throws {
    var (_, queue, memory) = try makeDriver()
    queue.availableRing = GuestAddress(regionA.size - 22)
    try queue.validate(memory: memory)
}

// MARK: Available ring

@Test func availableIndexJumpIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.addChain([.readable(0x4000, 1)])
    try driver.setPublishedAvailableIndex(9)
    try expectRejected(.availableIndexJump(nextToConsume: 0, published: 9, size: 8), &queue, memory)
    try driver.setPublishedAvailableIndex(0xFFFF)                               // moved backwards
    try expectRejected(.availableIndexJump(nextToConsume: 0, published: 0xFFFF, size: 8), &queue, memory)
    try driver.setPublishedAvailableIndex(8)                                    // exactly a full ring is fine
    #expect(try queue.nextChain(memory: memory) != nil)
}

@Test func headIndexOutOfRangeIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.makeAvailable(head: 8)
    try expectRejected(.headIndexOutOfRange(index: 8, size: 8), &queue, memory)
}

// MARK: Descriptor chains

@Test func nextIndexOutOfRangeIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.writeDescriptor(2, address: 0x4000, length: 1, flags: FakeDriver.flagNext, next: 8)
    try driver.makeAvailable(head: 2)
    try expectRejected(.nextIndexOutOfRange(head: 2, next: 8, tableEntries: 8), &queue, memory)
}

@Test func loopingChainIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.writeDescriptor(0, address: 0x4000, length: 1, flags: FakeDriver.flagNext, next: 1)
    try driver.writeDescriptor(1, address: 0x4000, length: 1, flags: FakeDriver.flagNext, next: 0)
    try driver.makeAvailable(head: 0)
    try expectRejected(.chainTooLong(head: 0, tableEntries: 8), &queue, memory)
}

@Test func selfLoopIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.writeDescriptor(5, address: 0x4000, length: 1, flags: FakeDriver.flagNext, next: 5)
    try driver.makeAvailable(head: 5)
    try expectRejected(.chainTooLong(head: 5, tableEntries: 8), &queue, memory)
}

@Test func chainUsingEveryDescriptorOnceIsAccepted() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.addChain((0..<8).map { _ in .readable(0x4000, 1) })
    #expect(try queue.nextChain(memory: memory)?.readable.count == 8)
}

@Test func readableAfterWritableIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.addChain([.writable(0x20000, 8), .readable(0x4000, 8)])
    try expectRejected(.readableAfterWritable(head: 0), &queue, memory)
}

@Test func readableAfterWritableInIndirectTableIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    let head = try driver.addIndirectChain([.readable(0x4000, 8), .writable(0x20000, 8), .readable(0x4000, 8)], tableAddress: 0x5000)
    try expectRejected(.readableAfterWritable(head: head), &queue, memory)
}

@Test func bufferAddressOverflowIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.addChain([.readable(0x4000, 8), .writable(0xFFFF_FFFF_FFFF_FF00, 0x200)])
    try expectRejected(.bufferAddressOverflow(head: 0, address: 0xFFFF_FFFF_FFFF_FF00, length: 0x200), &queue, memory)
}

@Test(arguments: [
    (hole + 0x8000, UInt32(16)),                     // inside the hole
    (regionA.size - 8, 16),                          // crosses from region A into the hole
    (regionA.size - 16, UInt32(hole + 0x20)),        // spans the hole into region B
    (regionB.base + regionB.size - 1, 2),            // runs past the end of RAM
    (0x1_0000_0000, 1),                              // far above RAM
    (hole + 0x100, 0),                               // empty, but still outside RAM
] as [(UInt64, UInt32)])
func bufferOutsideMemoryIsRejected(address: UInt64, length: UInt32) throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.addChain([.readable(0x4000, 8), .writable(address, length)])
    try expectRejected(.bufferOutsideMemory(head: 0, address: address, length: length), &queue, memory)
}

@Test func chainLengthOverflowIsRejected() throws {
    // 2 GiB + 64 KiB of reserved, untouched RAM: two 2 GiB buffers add up to 2^32 bytes.
    let memory = try GuestMemory(layout: [(0, 0x8001_0000)])
    let driver = try FakeDriver(memory: memory, size: 8, descriptorTable: 0x8000_0000, availableRing: 0x8000_1000, usedRing: 0x8000_2000)
    var queue = driver.makeQueue()
    try driver.addChain([.readable(0, 0x8000_0000), .writable(0, 0x7FFF_FFFF)])
    #expect(try queue.nextChain(memory: memory)?.writable.count == 1)  // UInt32.max total is fine
    try driver.addChain([.readable(0, 0x8000_0000), .writable(0, 0x8000_0000)])
    #expect(throws: VirtqueueError.chainLengthOverflow(head: 2)) { try queue.nextChain(memory: memory) }
}

// MARK: Indirect tables

@Test func indirectWithNextIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.writeDescriptor(0, address: 0x4000, length: 1, flags: FakeDriver.flagWrite, next: 0, table: GuestAddress(0x5000))
    try driver.writeDescriptor(0, address: 0x5000, length: 16, flags: FakeDriver.flagIndirect | FakeDriver.flagNext, next: 1)
    try driver.writeDescriptor(1, address: 0x4000, length: 1, flags: 0, next: 0)
    try driver.makeAvailable(head: 0)
    try expectRejected(.indirectWithNext(head: 0), &queue, memory)
}

@Test func nestedIndirectIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.writeDescriptor(0, address: 0x4000, length: 1, flags: FakeDriver.flagNext, next: 1, table: GuestAddress(0x5000))
    try driver.writeDescriptor(1, address: 0x6000, length: 16, flags: FakeDriver.flagIndirect, next: 0, table: GuestAddress(0x5000))
    try driver.writeDescriptor(0, address: 0x4000, length: 1, flags: 0, next: 0, table: GuestAddress(0x6000))
    try driver.writeDescriptor(3, address: 0x5000, length: 32, flags: FakeDriver.flagIndirect, next: 0)
    try driver.makeAvailable(head: 3)
    try expectRejected(.nestedIndirect(head: 3), &queue, memory)
}

@Test(arguments: [UInt32(0), 8, 24, UInt32(16 * (Virtqueue.maxIndirectEntries + 1))])
func invalidIndirectTableLengthIsRejected(length: UInt32) throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.writeDescriptor(1, address: 0x5000, length: length, flags: FakeDriver.flagIndirect, next: 0)
    try driver.makeAvailable(head: 1)
    try expectRejected(.invalidIndirectTableLength(head: 1, length: length), &queue, memory)
}

@Test(arguments: [
    (hole, UInt32(32)),                              // in the hole
    (regionA.size - 16, 32),                         // crosses into the hole
    (0xFFFF_FFFF_FFFF_FFF0, 32),                     // wraps 2^64
] as [(UInt64, UInt32)])
func indirectTableOutsideMemoryIsRejected(address: UInt64, length: UInt32) throws {
    var (driver, queue, memory) = try makeDriver()
    try driver.writeDescriptor(1, address: address, length: length, flags: FakeDriver.flagIndirect, next: 0)
    try driver.makeAvailable(head: 1)
    try expectRejected(.indirectTableOutsideMemory(head: 1, address: address, length: length), &queue, memory)
}

@Test func loopInIndirectTableIsBoundedByItsEntries() throws {
    var (driver, queue, memory) = try makeDriver()
    let table = GuestAddress(0x5000)
    try driver.writeDescriptor(0, address: 0x4000, length: 1, flags: FakeDriver.flagNext, next: 1, table: table)
    try driver.writeDescriptor(1, address: 0x4000, length: 1, flags: FakeDriver.flagNext, next: 0, table: table)
    try driver.writeDescriptor(0, address: 0x5000, length: 32, flags: FakeDriver.flagIndirect, next: 0)
    try driver.makeAvailable(head: 0)
    try expectRejected(.chainTooLong(head: 0, tableEntries: 2), &queue, memory)
}

@Test func nextIndexOutsideIndirectTableIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    let table = GuestAddress(0x5000)
    try driver.writeDescriptor(0, address: 0x4000, length: 1, flags: FakeDriver.flagNext, next: 1, table: table)
    try driver.writeDescriptor(1, address: 0x4000, length: 1, flags: FakeDriver.flagNext, next: 2, table: table)
    try driver.writeDescriptor(0, address: 0x5000, length: 32, flags: FakeDriver.flagIndirect, next: 0)
    try driver.makeAvailable(head: 0)
    try expectRejected(.nextIndexOutOfRange(head: 0, next: 2, tableEntries: 2), &queue, memory)
}

@Test func bufferOutsideMemoryInIndirectTableIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    let head = try driver.addIndirectChain([.readable(0x4000, 8), .writable(hole + 4, 8)], tableAddress: 0x5000)
    try expectRejected(.bufferOutsideMemory(head: head, address: hole + 4, length: 8), &queue, memory)
}

// MARK: Completions and messages

@Test func completingHeadOutsideQueueIsRejected() throws {
    var (driver, queue, memory) = try makeDriver()
    let before = try snapshot(memory)
    #expect(throws: VirtqueueError.invalidCompletion(head: 8, size: 8)) {
        try queue.complete(headIndex: 8, writtenLength: 0, memory: memory)
    }
    #expect(try snapshot(memory) == before)
    #expect(try driver.usedIndex() == 0)
}

@Test func errorDescriptionsAreOneLineWithValues() {
    let errors: [VirtqueueError] = [
        .notReady, .invalidSize(size: 3, maxSize: 256), .misaligned(.usedRing, address: 0x3002, alignment: 4),
        .areaOutsideMemory(.descriptorTable, address: 0x10000, length: 128),
        .availableIndexJump(nextToConsume: 1, published: 20, size: 8), .headIndexOutOfRange(index: 9, size: 8),
        .nextIndexOutOfRange(head: 1, next: 9, tableEntries: 8), .chainTooLong(head: 1, tableEntries: 8),
        .readableAfterWritable(head: 1), .indirectWithNext(head: 1), .nestedIndirect(head: 1),
        .invalidIndirectTableLength(head: 1, length: 24), .indirectTableOutsideMemory(head: 1, address: 0x10000, length: 32),
        .bufferAddressOverflow(head: 1, address: 0xFFFF_FFFF_FFFF_FF00, length: 0x200),
        .bufferOutsideMemory(head: 1, address: 0x18000, length: 16), .chainLengthOverflow(head: 1),
        .invalidCompletion(head: 9, size: 8), .memoryAccess(address: 0x10000, length: 2),
    ]
    for error in errors {
        #expect(!error.description.isEmpty && !error.description.contains("\n"))
    }
    #expect(VirtqueueError.misaligned(.usedRing, address: 0x3002, alignment: 4).description
            == "virtqueue used ring at 0x3002 is not 4-byte aligned")
    #expect(VirtqueueError.bufferOutsideMemory(head: 1, address: 0x18000, length: 16).description
            == "chain 1: buffer at 0x18000 + 16 bytes is outside guest RAM")
}

// MARK: In-process fuzzing

// The same harness as Fuzz/Virtqueue/main.swift, with #expect instead of preconditions.
// Input: size u16, descriptor table u16, available ring u16, used ring u16, flags u8
// (bit 0: EVENT_IDX), then the contents of guest RAM from address 0 (the hole skipped).
private let fuzzHeaderSize = 9
private let fuzzLayout: [(base: UInt64, size: UInt64)] = [(0, 0x8000), (0xC000, 0x4000)]   // hole at 32-48 KiB

private enum FuzzOutcome {
    case drained(chains: Int)
    case rejected(VirtqueueError)
}

private func runFuzzInput(_ input: [UInt8], memory: GuestMemory) -> FuzzOutcome {
    guard input.count >= fuzzHeaderSize else { return .drained(chains: 0) }
    let ram = Array(input[fuzzHeaderSize...])
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
                #expect(memory.contains(buffer.address, length: UInt64(buffer.length)))
            }
            #expect(chain.readableLength + chain.writableLength <= UInt64(UInt32.max))
            #expect(chain.headIndex < queue.size)
            let written = Int(min(chain.writableLength, 64))
            #expect(throws: Never.self) { try chain.write([UInt8](repeating: 0xA5, count: written), to: memory) }
            try queue.complete(headIndex: chain.headIndex, writtenLength: UInt32(written), memory: memory)
            _ = try queue.needsInterrupt(memory: memory)
            chains += 1
        }
        return .drained(chains: chains)
    } catch {
        return .rejected(error)
    }
}

/// A plausible-looking but hostile queue: rings at fixed low addresses, descriptors with
/// random flags, links and buffers that land in RAM, in the hole, across edges or anywhere.
private func makeFuzzInput(_ rng: inout SplitMix64) -> [UInt8] {
    /// True once in `n` draws.
    func oneIn(_ n: Int) -> Bool { Int.random(in: 0..<n, using: &rng) == 0 }
    func any16() -> UInt16 { UInt16.random(in: 0...UInt16.max, using: &rng) }

    let size: UInt16 = [1, 2, 4, 8, 16, 32].randomElement(using: &rng)!
    var header = [UInt8](repeating: 0, count: fuzzHeaderSize)
    header.put(oneIn(16) ? UInt16.random(in: 0...512, using: &rng) : size, at: 0)
    header.put(oneIn(16) ? any16() : 0x000, at: 2)       // descriptor table
    header.put(oneIn(16) ? any16() : 0x800, at: 4)       // available ring
    header.put(oneIn(16) ? any16() : 0xA00, at: 6)       // used ring
    header[8] = UInt8.random(in: 0...1, using: &rng)     // EVENT_IDX

    var ram = [UInt8](repeating: 0, count: 0x1000)
    func bufferAddress() -> UInt64 {
        switch Int.random(in: 0..<16, using: &rng) {
        case 0...7: UInt64.random(in: 0x1000..<0x7F00, using: &rng)      // region A
        case 8...10: UInt64.random(in: 0xC000..<0xFF00, using: &rng)     // region B
        case 11: UInt64.random(in: 0x8000..<0xC000, using: &rng)         // hole
        case 12: 0x8000 - UInt64.random(in: 0...64, using: &rng)         // near an edge
        case 13: 0xC00 + 16 * UInt64.random(in: 0..<64, using: &rng)     // candidate indirect tables
        case 14: UInt64.max - UInt64.random(in: 0...512, using: &rng)    // near 2^64
        default: rng.next()                                              // anywhere
        }
    }
    func bufferLength() -> UInt32 {
        switch Int.random(in: 0..<16, using: &rng) {
        case 0: UInt32.random(in: 0...UInt32.max, using: &rng)
        case 1...3: 16 * UInt32.random(in: 1...8, using: &rng)           // an indirect table's length
        default: UInt32.random(in: 0...256, using: &rng)
        }
    }
    func descriptor(at offset: Int, entries: Int) {
        ram.put(bufferAddress(), at: offset)
        ram.put(bufferLength(), at: offset + 8)
        var flags = oneIn(2) ? FakeDriver.flagNext : 0
        if oneIn(2) { flags |= FakeDriver.flagWrite }
        if oneIn(8) { flags = oneIn(4) ? flags | FakeDriver.flagIndirect : FakeDriver.flagIndirect }
        ram.put(flags, at: offset + 12)
        ram.put(oneIn(16) ? any16() : UInt16.random(in: 0..<UInt16(entries), using: &rng), at: offset + 14)
    }
    for i in 0..<Int(size) { descriptor(at: 16 * i, entries: Int(size)) }
    for i in 0..<64 { descriptor(at: 0xC00 + 16 * i, entries: 8) }        // candidate indirect tables
    ram.put(UInt16.random(in: 0...1, using: &rng), at: 0x800)            // avail flags
    ram.put(oneIn(8) ? any16() : UInt16.random(in: 0...size, using: &rng), at: 0x802)   // avail idx
    for i in 0..<Int(size) {
        ram.put(oneIn(16) ? any16() : UInt16.random(in: 0..<size, using: &rng), at: 0x804 + 2 * i)
    }
    ram.put(UInt16.random(in: 0...size, using: &rng), at: 0x804 + 2 * Int(size))   // used_event
    return header + ram
}

@Test func fuzzedQueuesNeverEscapeGuestMemory() throws {
    let memory = try GuestMemory(layout: fuzzLayout)
    var rng = SplitMix64(seed: 0x4B49_5445)
    var drained = 0, served = 0, rejected = 0
    for _ in 0..<3000 {
        switch runFuzzInput(makeFuzzInput(&rng), memory: memory) {
        case .drained(let chains): drained += 1; served += chains
        case .rejected: rejected += 1
        }
    }
    // Both paths must be exercised for the run to mean anything.
    #expect(drained > 100 && served > 100 && rejected > 100, "drained \(drained), served \(served), rejected \(rejected)")
}
