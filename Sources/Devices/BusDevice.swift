import Synchronization

/// A device on the port-I/O or MMIO bus. It sees offsets from its own base, never port
/// numbers or guest addresses, so the same device can sit anywhere and tests drive it
/// directly. Accesses come from vCPU threads concurrently: devices lock their own state.
public protocol BusDevice: AnyObject, Sendable {
    /// Reads `width` (1, 2, 4 or 8) bytes at `offset`.
    func read(offset: UInt64, width: Int) -> UInt64
    func write(offset: UInt64, width: Int, value: UInt64)
}

/// Routes accesses to the device whose range holds the address. Unknown addresses read
/// as all-ones and are logged once each, the first `noticedAddressLimit` of them: a guest
/// can probe anything without harm, and without flooding the log.
public final class Bus: Sendable {
    public struct Range: Sendable {
        public let base: UInt64
        public let length: UInt64
        public let device: any BusDevice
        public init(base: UInt64, length: UInt64, device: any BusDevice) {
            self.base = base; self.length = length; self.device = device
        }
    }

    public let name: String
    private let ranges: [Range]
    /// Unknown addresses noticed so far, and whether the limit notice was given.
    private struct UnknownAccesses {
        var noticed: Set<UInt64> = []
        var overLimit = false
    }
    private let seenUnknown = Mutex(UnknownAccesses())
    private let report: @Sendable (String) -> Void

    public enum Error: Swift.Error, CustomStringConvertible {
        case overlap(UInt64, UInt64)
        public var description: String {
            switch self { case .overlap(let a, let b): "bus ranges at 0x\(String(a, radix: 16)) and 0x\(String(b, radix: 16)) overlap" }
        }
    }

    /// `report` receives the one-time notice for each unknown address.
    public init(name: String, ranges: [Range], report: @escaping @Sendable (String) -> Void) throws {
        let sorted = ranges.sorted { $0.base < $1.base }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.base + a.length > b.base {
            throw Error.overlap(a.base, b.base)
        }
        self.name = name
        self.ranges = sorted
        self.report = report
    }

    /// Binary search for the range holding `address`.
    func find(_ address: UInt64) -> Range? {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let r = ranges[mid]
            if address < r.base { hi = mid }
            else if address - r.base >= r.length { lo = mid + 1 }
            else { return r }
        }
        return nil
    }

    public func read(_ address: UInt64, width: Int) -> UInt64 {
        guard let r = find(address) else {
            noteUnknown(address, "read")
            return width >= 8 ? UInt64.max : (UInt64(1) << (8 * UInt64(width))) - 1
        }
        return r.device.read(offset: address - r.base, width: width)
    }

    public func write(_ address: UInt64, width: Int, value: UInt64) {
        guard let r = find(address) else {
            noteUnknown(address, "write")
            return
        }
        r.device.write(offset: address - r.base, width: width, value: value)
    }

    /// The unknown addresses seen so far (for tests and diagnostics).
    public var unknownAddresses: Set<UInt64> { seenUnknown.withLock { $0.noticed } }

    /// How many distinct unknown addresses get their notice (and are remembered): a guest
    /// that sweeps a range (kvm-unit-tests fills a disabled APIC's page) must not flood the
    /// log or grow the set without bound.
    public static let noticedAddressLimit = 64

    private func noteUnknown(_ address: UInt64, _ kind: String) {
        let (first, atLimit) = seenUnknown.withLock { u -> (Bool, Bool) in
            if u.noticed.count < Self.noticedAddressLimit || u.noticed.contains(address) {
                return (u.noticed.insert(address).inserted, false)
            }
            defer { u.overLimit = true }
            return (false, !u.overLimit)
        }
        if first {
            report("\(name): guest \(kind) at unknown address 0x\(String(address, radix: 16)); answering with all-ones (logged once)")
        } else if atLimit {
            report("\(name): more than \(Self.noticedAddressLimit) unknown addresses; the rest are answered with all-ones without a notice")
        }
    }
}

/// Accepts and ignores everything; reads as zero. For ports a guest is known to touch
/// harmlessly, such as the POST diagnostic port 0x80 used for I/O delays.
public final class NullDevice: BusDevice {
    public init() {}
    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }
    public func write(offset: UInt64, width: Int, value: UInt64) {}
}
