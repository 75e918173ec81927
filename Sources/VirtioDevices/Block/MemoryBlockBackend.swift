import SystemPackage

/// A disk held in a byte array, for tests: it counts flushes and can be told to fail any
/// operation with a chosen `Errno`, to exercise the device's error paths.
public final class MemoryBlockBackend: BlockBackend {
    public enum Operation: Hashable, Sendable { case read, write, flush }

    public private(set) var bytes: [UInt8]
    public let isReadOnly: Bool
    /// Operations that fail, and with what; empty means everything succeeds.
    public var failures: [Operation: Errno] = [:]
    public private(set) var flushCount = 0
    public private(set) var writeCount = 0

    public init(bytes: [UInt8], readOnly: Bool = false) {
        self.bytes = bytes
        self.isReadOnly = readOnly
    }

    public convenience init(size: Int, readOnly: Bool = false) {
        self.init(bytes: [UInt8](repeating: 0, count: size), readOnly: readOnly)
    }

    public var size: UInt64 { UInt64(bytes.count) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(Errno) {
        if let failure = failures[.read] { throw failure }
        guard contains(offset: offset, count: buffer.count) else { throw .invalidArgument }
        let start = Int(offset)
        bytes.withUnsafeBytes { source in
            // Sound: contains() put [start, start + buffer.count) inside `bytes`.
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[start..<start + buffer.count]))
        }
    }

    public func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(Errno) {
        if let failure = failures[.write] { throw failure }
        guard !isReadOnly else { throw .badFileDescriptor }
        guard contains(offset: offset, count: buffer.count) else { throw .invalidArgument }
        let start = Int(offset)
        bytes.replaceSubrange(start..<start + buffer.count, with: buffer)
        writeCount += 1
    }

    public func flush() throws(Errno) {
        if let failure = failures[.flush] { throw failure }
        flushCount += 1
    }
}
