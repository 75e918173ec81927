/// A 48-bit Ethernet address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The six octets, most significant (transmitted first) first.
    public let bytes: [UInt8]

    /// `bytes` must hold exactly six octets.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    /// Parses `AA:BB:CC:DD:EE:FF` (either case; exactly two hex digits per octet).
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            guard part.utf8.count == 2, part.utf8.allSatisfy(\.isHexDigit),
                  let octet = UInt8(part, radix: 16) else { return nil }
            octets.append(octet)
        }
        self.bytes = octets
    }

    /// The group bit (I/G, lowest bit of the first octet): set for multicast and broadcast.
    public var isMulticast: Bool { bytes[0] & 1 != 0 }
    /// The U/L bit: set for addresses not assigned by an OUI owner.
    public var isLocallyAdministered: Bool { bytes[0] & 2 != 0 }
    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    public var description: String {
        bytes.map { b in
            let digits = String(b, radix: 16)
            return b < 0x10 ? "0" + digits : digits
        }.joined(separator: ":")
    }

    /// The address a device gets when none is given: `06:00` followed by the 32-bit
    /// FNV-1a hash of `seed` (the tap name), big-endian. 0x06 sets the locally-administered
    /// bit and clears the multicast bit, so it cannot collide with a vendor-assigned
    /// address, and the same tap name always yields the same MAC (stable DHCP leases)
    /// while VMs on different taps differ.
    public static func derived(from seed: String) -> MACAddress {
        var hash: UInt32 = 0x811C_9DC5
        for byte in seed.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 0x0100_0193
        }
        return MACAddress(bytes: [0x06, 0x00,
                                  UInt8(truncatingIfNeeded: hash >> 24), UInt8(truncatingIfNeeded: hash >> 16),
                                  UInt8(truncatingIfNeeded: hash >> 8), UInt8(truncatingIfNeeded: hash)])!
    }
}

private extension UInt8 {
    var isHexDigit: Bool {
        (0x30...0x39).contains(self) || (0x41...0x46).contains(self) || (0x61...0x66).contains(self)
    }
}
