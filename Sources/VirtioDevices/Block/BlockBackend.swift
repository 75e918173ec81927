import SystemPackage

/// Where a virtio-blk device keeps its bytes: a flat, fixed-size array of bytes addressed
/// by offset. The device has already checked every request against `size`, but a backend
/// checks again and fails with an `Errno` rather than trusting its caller. A backend never
/// traps on an I/O problem: each failure comes back as the `Errno` the host reported.
public protocol BlockBackend: AnyObject {
    /// Size in bytes, fixed when the backend was opened.
    var size: UInt64 { get }
    /// True when the backend cannot be written (the device then offers VIRTIO_BLK_F_RO).
    var isReadOnly: Bool { get }
    /// Fills all of `buffer` with the bytes at [offset, offset + buffer.count).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(Errno)
    /// Stores all of `buffer` at [offset, offset + buffer.count).
    func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(Errno)
    /// Returns once every completed write is on stable storage.
    func flush() throws(Errno)
}

extension BlockBackend {
    /// True when [offset, offset + count) lies inside the backend.
    public func contains(offset: UInt64, count: Int) -> Bool {
        count >= 0 && offset <= size && UInt64(count) <= size - offset
    }
}

/// Why a disk image could not be opened; each reads as one line for the CLI.
public enum BlockBackendError: Error, Equatable, CustomStringConvertible {
    /// Another open file description (this or another process) holds a conflicting flock.
    case inUse(path: String)
    case cannotOpen(path: String, Errno)
    case cannotLock(path: String, Errno)
    case cannotMeasure(path: String, Errno)
    /// A directory, FIFO, socket, ...: only regular files and block devices hold disks.
    case notADisk(path: String)

    public var description: String {
        switch self {
        case .inUse(let path): "disk \(path) is in use by another process"
        case .cannotOpen(let path, let e): "cannot open disk \(path): \(e)"
        case .cannotLock(let path, let e): "cannot lock disk \(path): \(e)"
        case .cannotMeasure(let path, let e): "cannot find the size of disk \(path): \(e)"
        case .notADisk(let path): "disk \(path) is not a regular file or block device"
        }
    }
}
