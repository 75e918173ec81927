import GuestMemory
import Synchronization
import SystemPackage
import Virtio

/// What a disk has done, for Firecracker's metrics (requests that succeeded, and their bytes).
public struct BlockDeviceCounters: Equatable, Sendable {
    public var reads = 0
    public var readBytes = 0
    public var writes = 0
    public var writeBytes = 0
    public var flushes = 0
}

/// virtio-blk feature bits (virtio 1.2, section 5.2.3) that Kite offers.
public enum BlockFeature {
    /// VIRTIO_BLK_F_SIZE_MAX: `size_max` bounds each data segment.
    public static let sizeMax: UInt64 = 1 << 1
    /// VIRTIO_BLK_F_SEG_MAX: `seg_max` bounds the data segments of a request.
    public static let segMax: UInt64 = 1 << 2
    /// VIRTIO_BLK_F_RO: the disk is read-only.
    public static let readOnly: UInt64 = 1 << 5
    /// VIRTIO_BLK_F_FLUSH: the FLUSH command exists (and the cache is write-back).
    public static let flush: UInt64 = 1 << 9
}

/// A virtio-blk disk (virtio 1.2, section 5.2) with one request queue, served from a
/// `BlockBackend`. Every request is checked before any byte moves; a bad one completes
/// with IOERR or UNSUPP, never a crash, and data goes straight between the backend and
/// the guest's RAM, so no request makes Kite allocate in proportion to its size.
///
/// Request size limit: the driver is told `seg_max` = 128 segments of at most
/// `size_max` = 32 KiB, so a conforming driver never sends more than 4 MiB of data in
/// one request (Linux splits larger I/O); a request over 4 MiB fails with IOERR. This
/// bounds how long a single request can hold the device thread.
///
/// Cache mode: when the driver accepts VIRTIO_BLK_F_FLUSH the cache is write-back and a
/// completed FLUSH means every earlier completed write is on the host disk (fsync). A
/// driver that declines FLUSH gets write-through: each write is flushed before it
/// completes (virtio 1.2, section 5.2.5).
public final class BlockDevice: VirtioDevice {
    public static let sectorSize: UInt64 = 512
    public static let queueSize: UInt16 = 256
    public static let maxSegments: UInt32 = 128
    public static let maxSegmentBytes: UInt32 = 32 * 1024
    /// The most data one request may carry: `maxSegments * maxSegmentBytes`, 4 MiB.
    public static let maxRequestDataBytes = UInt64(maxSegments) * UInt64(maxSegmentBytes)
    /// GET_ID returns this many bytes: the serial, zero-padded.
    public static let serialLength = 20
    /// Size of `struct virtio_blk_config` in virtio 1.2.
    public static let configSpaceSize = 60

    /// Replaced only under the transport's device lock (`replaceBackend`).
    public private(set) var backend: any BlockBackend
    /// The GET_ID answer: the serial's UTF-8 bytes, truncated or zero-padded to 20.
    public let serial: [UInt8]
    /// Disk size in 512-byte sectors; a trailing partial sector of the backend is unused.
    public private(set) var capacitySectors: UInt64
    /// Set on activation: true when the driver declined VIRTIO_BLK_F_FLUSH, so every write
    /// is flushed before it completes. False before activation and after a reset.
    public private(set) var isWriteThrough = false
    private let counterState = Mutex(BlockDeviceCounters())
    /// Read from any thread; counted on the device thread.
    public var counters: BlockDeviceCounters { counterState.withLock { $0 } }
    private var problems: ProblemLog

    /// `log` receives one line per problem (malformed requests, host I/O errors); after
    /// `ProblemLog.limit` lines it receives one last notice and then nothing, so a guest
    /// cannot flood the host log.
    public init(backend: any BlockBackend, serial: String? = nil,
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.backend = backend
        self.capacitySectors = backend.size / Self.sectorSize
        let serialBytes = Array((serial ?? "").utf8.prefix(Self.serialLength))
        self.serial = serialBytes + [UInt8](repeating: 0, count: Self.serialLength - serialBytes.count)
        self.problems = ProblemLog(sink: log)
    }

    /// Opens the image `config` names (locking it) and builds the device on it.
    public convenience init(config: BlockDeviceConfig,
                            log: @escaping @Sendable (String) -> Void = { _ in }) throws(BlockBackendError) {
        let backend = try FileBlockBackend(path: config.path, readOnly: config.readOnly)
        self.init(backend: backend, serial: config.serial, log: log)
    }

    public var isReadOnly: Bool { backend.isReadOnly }

    /// Puts a new backing file behind the disk (Firecracker's PATCH /drives): what was written
    /// to the old one is flushed first, so that nothing the guest completed is lost; the
    /// capacity is the new file's. Call under the transport's device lock
    /// (`VirtioMMIOTransport.changeDevice`), between requests; then tell the driver the
    /// configuration changed. Returns the flush's error, leaving the old backend in place.
    public func replaceBackend(_ new: any BlockBackend) -> Errno? {
        do { try backend.flush() } catch { return error }
        backend = new
        capacitySectors = new.size / Self.sectorSize
        return nil
    }

    // MARK: VirtioDevice

    public var type: VirtioDeviceType { .block }

    public var features: UInt64 {
        BlockFeature.flush | BlockFeature.segMax | BlockFeature.sizeMax
            | (isReadOnly ? BlockFeature.readOnly : 0)
    }

    public var queueSizes: [UInt16] { [Self.queueSize] }

    /// `struct virtio_blk_config`: capacity (le64) at 0, size_max (le32) at 8, seg_max
    /// (le32) at 12; every field for a feature Kite does not offer reads as zero.
    public var configSpace: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.configSpaceSize)
        bytes.put(capacitySectors, at: 0)
        bytes.put(Self.maxSegmentBytes, at: 8)
        bytes.put(Self.maxSegments, at: 12)
        return bytes
    }

    /// Bytes past the structure, or at a negative offset, read as zero.
    public func readConfig(offset: Int, count: Int) -> [UInt8] {
        VirtioConfigSpace.read(configSpace, offset: offset, count: count)
    }

    /// Nothing in the config space is writable without VIRTIO_BLK_F_CONFIG_WCE.
    public func writeConfig(offset: Int, bytes: [UInt8]) {}

    public func activate(features: UInt64, memory: GuestMemory) {
        isWriteThrough = features & BlockFeature.flush == 0
    }

    public func reset() {
        isWriteThrough = false
    }

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws -> Bool {
        guard index == 0 else { return false }
        var used = false
        while let chain = try queue.nextChain(memory: memory) {
            let written = handle(chain, memory: memory)
            try queue.complete(headIndex: chain.headIndex, writtenLength: written, memory: memory)
            used = true
        }
        return used
    }

    // MARK: Requests

    /// Serves one request and returns how many bytes it wrote into the chain's writable
    /// buffers, counting the status byte: data + 1 on success, 1 on failure (only the
    /// status byte), and 0 when the chain has no status byte in RAM to write at all (the
    /// request is then dropped and logged; the caller still completes it).
    public func handle(_ chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        guard let statusAddress = chain.statusByteAddress(in: memory) else {
            problems.report("request \(chain.headIndex) has no writable status byte in guest RAM; completed without a status")
            return 0
        }
        var status = BlockRequestStatus.ok
        var dataWritten: UInt32 = 0
        do throws(BlockRequestFailure) {
            let limits = BlockRequest.Limits(capacitySectors: capacitySectors,
                                             maxDataBytes: Self.maxRequestDataBytes)
            let request = try BlockRequest(chain: chain, memory: memory, limits: limits)
            dataWritten = try execute(request, chain: chain, memory: memory)
        } catch {
            status = error.status
            if let reason = error.reason { problems.report("request \(chain.headIndex): \(reason)") }
        }
        do {
            try memory.store(status.rawValue, at: statusAddress)
        } catch {
            // Not reachable: statusByteAddress checked the byte is in RAM.
            problems.report("request \(chain.headIndex): status byte: \(error)")
            return 0
        }
        return dataWritten + 1
    }

    /// Carries out a checked request; returns the data bytes written to the guest.
    private func execute(_ request: BlockRequest, chain: DescriptorChain,
                         memory: GuestMemory) throws(BlockRequestFailure) -> UInt32 {
        switch request {
        case .read(let diskOffset, let length):
            let buffers = try chain.hostBuffers(chain.writable, offset: 0, length: length, memory: memory)
            var position = diskOffset
            for buffer in buffers {
                do { try backend.read(into: buffer, at: position) } catch {
                    throw .ioError("reading \(buffer.count) bytes at disk offset \(position): \(error)")
                }
                position += UInt64(buffer.count)
            }
            counterState.withLock { $0.reads += 1; $0.readBytes += Int(length) }
            return UInt32(length)       // at most maxRequestDataBytes

        case .write(let diskOffset, let length):
            guard !isReadOnly else { throw .ioError("write to a read-only disk") }
            let buffers = try chain.hostBuffers(chain.readable, offset: UInt64(BlockRequest.headerSize),
                                                length: length, memory: memory)
            var position = diskOffset
            for buffer in buffers {
                do { try backend.write(from: UnsafeRawBufferPointer(buffer), at: position) } catch {
                    throw .ioError("writing \(buffer.count) bytes at disk offset \(position): \(error)")
                }
                position += UInt64(buffer.count)
            }
            if isWriteThrough { try flushBackend() }
            counterState.withLock { $0.writes += 1; $0.writeBytes += Int(length) }
            return 0

        case .flush:
            try flushBackend()
            counterState.withLock { $0.flushes += 1 }
            return 0

        case .getID(let length):
            do { try chain.write(Array(serial.prefix(Int(length))), to: memory) } catch {
                throw .ioError("GET_ID buffer: \(error)")
            }
            return UInt32(length)       // at most serialLength

        case .unsupported:
            throw BlockRequestFailure(status: .unsupported, reason: nil)
        }
    }

    private func flushBackend() throws(BlockRequestFailure) {
        do { try backend.flush() } catch { throw .ioError("flush: \(error)") }
    }
}

/// Passes the first `limit` problems to a log callback, then one notice that further ones
/// are dropped: a misbehaving guest can make every request fail, but not flood the log.
struct ProblemLog {
    static let limit = 20
    private let sink: @Sendable (String) -> Void
    private(set) var count = 0

    init(sink: @escaping @Sendable (String) -> Void) { self.sink = sink }

    mutating func report(_ message: String) {
        guard count <= Self.limit else { return }
        count += 1
        sink(count <= Self.limit ? message : "further virtio-blk problems are not logged")
    }
}
