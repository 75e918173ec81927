#if canImport(Glibc)
import Glibc
import HostCalls
#endif
import SystemPackage

/// A raw disk image: a regular file or a host block device, read and written in place.
///
/// Opening takes a non-blocking `flock` on the image so two VMs never share one disk by
/// accident: exclusive for a writable disk, shared for a read-only one (so several
/// read-only users may share an image, but nobody can open it writable meanwhile). The
/// lock lives as long as the open file description, that is until this object goes away.
///
/// The size is fixed at open. A file whose size is not a multiple of 512 bytes keeps its
/// trailing partial sector, but the device cannot reach it (capacity rounds down).
public final class FileBlockBackend: BlockBackend {
    public let path: String
    public let size: UInt64
    public let isReadOnly: Bool
    private let descriptor: FileDescriptor
    /// The first fsync failure. After one, the kernel may have dropped the dirty pages it
    /// could not write, so a later fsync succeeding would not mean the data is on disk:
    /// every later flush reports the same failure.
    private var flushFailure: Errno?
    /// fsync(2); tests put a failing one in its place (a real EIO needs a failing device).
    var sync: (Int32) -> Int32 = { fsync($0) }

    public init(path: String, readOnly: Bool) throws(BlockBackendError) {
        let fd: FileDescriptor
        do {
            // O_NONBLOCK so a FIFO given by mistake cannot hang the open; it is cleared
            // again once the file is known to be a regular file or block device.
            fd = try FileDescriptor.open(FilePath(path), readOnly ? .readOnly : .readWrite,
                                         options: [.closeOnExec, .nonBlocking])
        } catch {
            throw .cannotOpen(path: path, (error as? Errno) ?? .ioError)
        }
        do {
            size = try Self.validateAndLock(fd, path: path, readOnly: readOnly)
        } catch {
            try? fd.close()
            throw error
        }
        self.path = path
        self.isReadOnly = readOnly
        self.descriptor = fd
    }

    /// Checks the file type, takes the lock and returns the size in bytes.
    private static func validateAndLock(_ fd: FileDescriptor, path: String,
                                        readOnly: Bool) throws(BlockBackendError) -> UInt64 {
        var info = stat()
        guard fstat(fd.rawValue, &info) == 0 else { throw .cannotMeasure(path: path, Errno(rawValue: errno)) }
        let kind = info.st_mode & S_IFMT
        guard kind == S_IFREG || kind == S_IFBLK else { throw .notADisk(path: path) }
        let flags = fcntl(fd.rawValue, F_GETFL)
        guard flags >= 0, fcntl(fd.rawValue, F_SETFL, flags & ~O_NONBLOCK) == 0 else {
            throw .cannotOpen(path: path, Errno(rawValue: errno))
        }

        let operation = (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB
        if retryingInterrupted({ flock(fd.rawValue, operation) }) != 0 {
            let e = errno
            if e == EWOULDBLOCK { throw .inUse(path: path) }
            throw .cannotLock(path: path, Errno(rawValue: e))
        }

        // lseek works for block devices too, where st_size is 0.
        do {
            let end = try fd.seek(offset: 0, from: .end)
            return UInt64(end)
        } catch {
            throw .cannotMeasure(path: path, (error as? Errno) ?? .ioError)
        }
    }

    deinit {
        // Closing the only descriptor also releases the flock.
        try? descriptor.close()
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(Errno) {
        guard contains(offset: offset, count: buffer.count) else { throw .invalidArgument }
        var done = 0
        while done < buffer.count {
            // Sound: 0 <= done < buffer.count, so the rebased slice lies inside `buffer`.
            let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
            let count: Int
            do {
                // Sound: offset + done <= size, which came from an Int64 file offset.
                count = try descriptor.read(fromAbsoluteOffset: Int64(offset) + Int64(done), into: rest,
                                            retryOnInterrupt: true)
            } catch {
                throw (error as? Errno) ?? .ioError
            }
            // End of file inside the disk: the image shrank after it was opened.
            guard count > 0 else { throw .ioError }
            done += count
        }
    }

    public func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(Errno) {
        guard !isReadOnly else { throw .badFileDescriptor }
        guard contains(offset: offset, count: buffer.count) else { throw .invalidArgument }
        var done = 0
        while done < buffer.count {
            // Sound: 0 <= done < buffer.count, so the rebased slice lies inside `buffer`.
            let rest = UnsafeRawBufferPointer(rebasing: buffer[done...])
            let count: Int
            do {
                count = try descriptor.write(toAbsoluteOffset: Int64(offset) + Int64(done), rest,
                                             retryOnInterrupt: true)
            } catch {
                throw (error as? Errno) ?? .ioError
            }
            guard count > 0 else { throw .ioError }
            done += count
        }
    }

    public func flush() throws(Errno) {
        if let flushFailure { throw flushFailure }
        if retryingInterrupted({ sync(descriptor.rawValue) }) != 0 {
            let e = errno
            flushFailure = Errno(rawValue: e)
            throw Errno(rawValue: e)
        }
    }
}
