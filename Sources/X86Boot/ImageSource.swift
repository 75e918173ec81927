import SystemPackage

/// A kernel or initrd file read piecewise, so large images go straight into guest RAM
/// without a copy on the VMM's heap.
public protocol ImageSource {
    /// The file's name as given (a multiboot kernel sees it as argument 0).
    var name: String { get }
    var size: UInt64 { get }
    /// Reads exactly `buffer.count` bytes at `offset`, or throws.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws
}

extension ImageSource {
    public func bytes(at offset: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(at: offset, into: $0) }
        return out
    }
}

/// An image held in memory (tests, small files).
public struct ByteImage: ImageSource {
    public let data: [UInt8]
    public let name: String
    public init(_ data: [UInt8], name: String = "image") { self.data = data; self.name = name }
    public var size: UInt64 { UInt64(data.count) }
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw BootError.truncatedKernel("\(name): wanted \(buffer.count) bytes at offset \(offset), file has \(size)")
        }
        data.withUnsafeBytes { src in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(offset)..<Int(offset) + buffer.count]))
        }
    }
}

/// An image file on the host, read with pread.
public final class FileImage: ImageSource {
    public let path: String
    public let size: UInt64
    private let fd: FileDescriptor
    public var name: String { path }

    public init(path: String) throws {
        do {
            fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        } catch let e as Errno {
            throw BootError.cannotRead(path: path, reason: e.description)
        }
        self.path = path
        do {
            let end = try fd.seek(offset: 0, from: .end)
            size = UInt64(end)
        } catch let e as Errno {
            try? fd.close()
            throw BootError.cannotRead(path: path, reason: e.description)
        }
    }

    deinit { try? fd.close() }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw BootError.truncatedKernel("\(path): wanted \(buffer.count) bytes at offset \(offset), file has \(size)")
        }
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try fd.read(fromAbsoluteOffset: Int64(offset) + Int64(done),
                                into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]),
                                retryOnInterrupt: true)
            } catch let e as Errno {
                throw BootError.cannotRead(path: path, reason: e.description)
            }
            if n == 0 { throw BootError.truncatedKernel("\(path) ended at \(offset + UInt64(done)) bytes") }
            done += n
        }
    }
}
