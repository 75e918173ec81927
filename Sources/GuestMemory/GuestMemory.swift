#if canImport(Glibc)
import Glibc
#endif

/// A guest-physical address. A distinct type so a host pointer or a length is never
/// passed where a guest address is meant.
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.raw < b.raw }
    public func adding(_ offset: UInt64) -> GuestAddress { GuestAddress(raw &+ offset) }
    public var description: String { "0x" + String(raw, radix: 16) }
}

public enum GuestMemoryError: Error, Equatable, CustomStringConvertible {
    /// The range [address, address+length) is not entirely inside one RAM region.
    case outOfRange(address: UInt64, length: UInt64)
    case mapFailed(size: UInt64, errno: Int32)
    case overlappingRegions

    public var description: String {
        switch self {
        case .outOfRange(let a, let l):
            return "guest access outside RAM: 0x\(String(a, radix: 16)) + \(l) bytes"
        case .mapFailed(let size, let e):
            return "cannot reserve \(size >> 20) MiB of guest memory: \(String(cString: strerror(e)))"
        case .overlappingRegions:
            return "guest memory regions overlap"
        }
    }
}

/// One contiguous range of guest RAM backed by an anonymous host mapping.
public struct GuestRegion: Sendable {
    public let base: GuestAddress
    public let size: UInt64
    /// Host address of the mapping, as an integer so the struct stays Sendable; only
    /// `GuestMemory` turns it back into a pointer, after a bounds check.
    public let hostAddress: UInt

    public var end: UInt64 { base.raw + size }
    func contains(_ address: UInt64, _ length: UInt64) -> Bool {
        address >= base.raw && length <= size && address - base.raw <= size - length
    }
}

/// Guest RAM: owns the host mappings and releases them in `deinit`. Every access through
/// this type is bounds-checked, so a guest-controlled address can never reach host memory
/// outside the mappings.
///
/// It is a class shared by reference between vCPU threads and devices: the bytes are
/// shared with the guest anyway (the guest writes them concurrently), so there is no Swift
/// state to protect beyond the immutable region table.
public final class GuestMemory: @unchecked Sendable {
    public let regions: [GuestRegion]

    /// Maps `layout` (guest base, size) pairs as anonymous private memory, not yet touched,
    /// so an idle guest costs only the pages it uses. Each region starts on a 2 MiB boundary
    /// and is advised for transparent huge pages, as QEMU does: the guest's accesses then
    /// need a fraction of the nested page-table entries (and its boot is not slower after the
    /// host's memory fragments).
    public init(layout: [(base: UInt64, size: UInt64)]) throws {
        let sorted = layout.sorted { $0.base < $1.base }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.base + a.size > b.base {
            throw GuestMemoryError.overlappingRegions
        }
        var mapped: [GuestRegion] = []
        for r in sorted {
            guard let p = Self.mapAligned(size: Int(r.size)) else {
                let e = errno
                for m in mapped { munmap(UnsafeMutableRawPointer(bitPattern: m.hostAddress), Int(m.size)) }
                throw GuestMemoryError.mapFailed(size: r.size, errno: e)
            }
            _ = madvise(p, Int(r.size), MADV_HUGEPAGE)   // a hint: fails harmlessly without THP
            mapped.append(GuestRegion(base: GuestAddress(r.base), size: r.size,
                                      hostAddress: UInt(bitPattern: p)))
        }
        regions = mapped
    }

    /// The alignment of every region's host mapping: one transparent huge page.
    public static let hostAlignment = 2 << 20

    /// Maps `size` bytes starting on a `hostAlignment` boundary: over-reserves by one
    /// alignment unit, then unmaps the unaligned head and the tail. Nil (errno set) on failure.
    private static func mapAligned(size: Int) -> UnsafeMutableRawPointer? {
        let reserve = size + hostAlignment
        guard let raw = mmap(nil, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              raw != MAP_FAILED else { return nil }
        let start = UInt(bitPattern: raw)
        let aligned = (start + UInt(hostAlignment) - 1) & ~UInt(hostAlignment - 1)
        let head = Int(aligned - start)
        // Sound: head and tail lie inside the reservation just made, outside [aligned, aligned+size).
        if head > 0 { munmap(raw, head) }
        let tail = reserve - head - size
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + UInt(size)), tail) }
        return UnsafeMutableRawPointer(bitPattern: aligned)
    }

    deinit {
        for r in regions { munmap(UnsafeMutableRawPointer(bitPattern: r.hostAddress), Int(r.size)) }
    }

    /// Total RAM in bytes.
    public var size: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// True when [address, address+length) lies inside one region.
    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        regions.contains { $0.contains(address.raw, length) }
    }

    /// The host bytes backing [address, address+length), which must lie inside one region.
    /// The only place guest addresses become host pointers.
    public func hostBuffer(at address: GuestAddress, length: UInt64) throws -> UnsafeMutableRawBufferPointer {
        guard let r = regions.first(where: { $0.contains(address.raw, length) }) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: length)
        }
        // Sound: the region check above keeps [offset, offset+length) inside the live mapping.
        let base = UnsafeMutableRawPointer(bitPattern: r.hostAddress)!
        return UnsafeMutableRawBufferPointer(start: base + Int(address.raw - r.base.raw), count: Int(length))
    }

    public func write(_ bytes: some Collection<UInt8>, at address: GuestAddress) throws {
        let dst = try hostBuffer(at: address, length: UInt64(bytes.count))
        dst.copyBytes(from: bytes)
    }

    public func read(at address: GuestAddress, count: Int) throws -> [UInt8] {
        let src = try hostBuffer(at: address, length: UInt64(count))
        return Array(UnsafeRawBufferPointer(src))
    }

    /// Little-endian integer store.
    public func store<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws {
        let dst = try hostBuffer(at: address, length: UInt64(MemoryLayout<T>.size))
        dst.storeBytes(of: value.littleEndian, as: T.self)
    }

    /// Little-endian integer load.
    public func load<T: FixedWidthInteger>(_: T.Type = T.self, at address: GuestAddress) throws -> T {
        let src = try hostBuffer(at: address, length: UInt64(MemoryLayout<T>.size))
        return T(littleEndian: src.loadUnaligned(as: T.self))
    }

    /// Makes KVM fault the page holding `address` in again on the guest's next access, as
    /// QEMU's pc-testdev "flush page" does (for kvm-unit-tests' event-injection tests), and
    /// keeps its contents. QEMU protects the page PROT_NONE and back, during which a host
    /// access faults; Kite adds PROT_EXEC to the page and takes it away, which invalidates
    /// KVM's mapping just the same (any protection change does) while the page stays
    /// readable and writable throughout. False when the page is not RAM or mprotect fails.
    @discardableResult
    public func refault(pageAt address: GuestAddress) -> Bool {
        let page = address.raw & ~0xFFF
        guard let buffer = try? hostBuffer(at: GuestAddress(page), length: 0x1000),
              let start = buffer.baseAddress else { return false }
        // Sound: the page lies inside a live mapping (hostBuffer's check); only its protection changes.
        guard mprotect(start, 0x1000, PROT_READ | PROT_WRITE | PROT_EXEC) == 0 else { return false }
        return mprotect(start, 0x1000, PROT_READ | PROT_WRITE) == 0
    }

    /// Zeroes [address, address+length).
    public func zero(at address: GuestAddress, length: UInt64) throws {
        let dst = try hostBuffer(at: address, length: length)
        dst.initializeMemory(as: UInt8.self, repeating: 0)
    }
}
