import GuestMemory
import Virtio

/// virtio-blk request types (virtio 1.2, section 5.2.6): the `type` field of the header.
public enum BlockRequestType {
    /// VIRTIO_BLK_T_IN: disk -> guest.
    public static let read: UInt32 = 0
    /// VIRTIO_BLK_T_OUT: guest -> disk.
    public static let write: UInt32 = 1
    /// VIRTIO_BLK_T_FLUSH: every completed write reaches stable storage.
    public static let flush: UInt32 = 4
    /// VIRTIO_BLK_T_GET_ID: the 20-byte device serial.
    public static let getID: UInt32 = 8
}

/// The status byte the device writes at the end of every request.
public enum BlockRequestStatus: UInt8, Sendable {
    case ok = 0           // VIRTIO_BLK_S_OK
    case ioError = 1      // VIRTIO_BLK_S_IOERR
    case unsupported = 2  // VIRTIO_BLK_S_UNSUPP
}

/// A request as laid out in its descriptor chain, after every guest-controlled number in
/// it has been checked: offsets and lengths are in bytes and lie inside the disk.
///
/// Chain layout: 16 device-readable header bytes (type le32, reserved le32, sector le64),
/// then the data (device-readable for writes, device-writable for reads and GET_ID), and
/// last the one device-writable status byte.
enum BlockRequest: Equatable {
    case read(diskOffset: UInt64, length: UInt64)
    case write(diskOffset: UInt64, length: UInt64)
    case flush
    /// `length` is how many serial bytes fit in the guest's buffer (at most 20).
    case getID(length: UInt64)
    case unsupported(type: UInt32)

    static let headerSize = 16
    static let sectorSize: UInt64 = 512

    /// The limits a request is checked against.
    struct Limits {
        var capacitySectors: UInt64
        var maxDataBytes: UInt64
    }

    /// Reads and checks the request in `chain`. The chain must already have a writable
    /// status byte (its last writable byte), which is not part of any data buffer.
    init(chain: DescriptorChain, memory: GuestMemory, limits: Limits) throws(BlockRequestFailure) {
        guard chain.readableLength >= UInt64(Self.headerSize) else {
            throw .ioError("header is \(chain.readableLength) bytes, not \(Self.headerSize)")
        }
        let header: [UInt8]
        do {
            header = try chain.read(from: memory, count: Self.headerSize)
        } catch {
            throw .ioError("header: \(error)")
        }
        let type = header.get(UInt32.self, at: 0)!
        let sector = header.get(UInt64.self, at: 8)!
        // The status byte is the last writable byte; everything before it is data space.
        let writableData = chain.writableLength - 1

        switch type {
        case BlockRequestType.read:
            let offset = try Self.diskOffset(of: "read", sector: sector, length: writableData, limits: limits)
            self = .read(diskOffset: offset, length: writableData)
        case BlockRequestType.write:
            let length = chain.readableLength - UInt64(Self.headerSize)
            let offset = try Self.diskOffset(of: "write", sector: sector, length: length, limits: limits)
            self = .write(diskOffset: offset, length: length)
        case BlockRequestType.flush:
            self = .flush
        case BlockRequestType.getID:
            self = .getID(length: min(writableData, UInt64(BlockDevice.serialLength)))
        default:
            self = .unsupported(type: type)
        }
    }

    /// The byte offset of `sector`, once [sector * 512, + length) is known to be whole
    /// sectors, within the per-request limit and inside the disk, all without overflow.
    static func diskOffset(of what: String, sector: UInt64, length: UInt64,
                           limits: Limits) throws(BlockRequestFailure) -> UInt64 {
        guard length % sectorSize == 0 else {
            throw .ioError("\(what) of \(length) bytes is not a whole number of sectors")
        }
        guard length <= limits.maxDataBytes else {
            throw .ioError("\(what) of \(length) bytes is over the \(limits.maxDataBytes)-byte request limit")
        }
        let (offset, overflow) = sector.multipliedReportingOverflow(by: sectorSize)
        let (end, endOverflow) = offset.addingReportingOverflow(length)
        guard !overflow, !endOverflow, end <= limits.capacitySectors * sectorSize else {
            throw .ioError("\(what) of \(length) bytes at sector \(sector) ends past the disk's \(limits.capacitySectors) sectors")
        }
        return offset
    }
}

/// Why a request did not succeed: the status the guest gets, and for the log a reason
/// (nil when there is nothing worth logging, as for an unsupported type).
struct BlockRequestFailure: Error {
    var status: BlockRequestStatus
    var reason: String?

    static func ioError(_ reason: String) -> BlockRequestFailure { .init(status: .ioError, reason: reason) }
}

extension DescriptorChain {
    /// The guest address of the status byte: the last byte of the last non-empty writable
    /// descriptor. Nil when the chain has no writable byte or that byte is not in RAM.
    func statusByteAddress(in memory: GuestMemory) -> GuestAddress? {
        guard let last = writable.last(where: { $0.length > 0 }) else { return nil }
        let (address, overflow) = last.address.raw.addingReportingOverflow(UInt64(last.length) - 1)
        guard !overflow, memory.contains(GuestAddress(address), length: 1) else { return nil }
        return GuestAddress(address)
    }

    /// The host bytes behind `length` bytes of `descriptors`, starting `offset` bytes in.
    /// Every piece is bounds-checked by `GuestMemory` before anything is transferred, so a
    /// request that reaches outside RAM fails without touching the disk or the guest.
    /// Pieces that are adjacent in host memory are merged, to make fewer system calls.
    func hostBuffers(_ descriptors: [Descriptor], offset: UInt64, length: UInt64,
                     memory: GuestMemory) throws(BlockRequestFailure) -> [UnsafeMutableRawBufferPointer] {
        var buffers: [UnsafeMutableRawBufferPointer] = []
        var skip = offset
        var remaining = length
        for descriptor in descriptors where remaining > 0 {
            let descriptorLength = UInt64(descriptor.length)
            if skip >= descriptorLength { skip -= descriptorLength; continue }
            let take = min(descriptorLength - skip, remaining)
            let piece: UnsafeMutableRawBufferPointer
            do {
                piece = try memory.hostBuffer(at: descriptor.address.adding(skip), length: take)
            } catch {
                throw .ioError("data buffer: \(error)")
            }
            // Sound: both pieces came from hostBuffer, so each lies inside a live mapping;
            // when one ends exactly where the next begins, their union is mapped as well.
            if let last = buffers.last, let end = last.baseAddress.map({ $0 + last.count }),
               end == piece.baseAddress {
                buffers[buffers.count - 1] = UnsafeMutableRawBufferPointer(start: last.baseAddress,
                                                                           count: last.count + piece.count)
            } else {
                buffers.append(piece)
            }
            skip = 0
            remaining -= take
        }
        guard remaining == 0 else { throw .ioError("data buffers hold \(length - remaining) of \(length) bytes") }
        return buffers
    }
}
