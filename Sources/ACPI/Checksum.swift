/// The ACPI checksum rule: all bytes of a table (or of the covered part of the RSDP),
/// including the checksum byte itself, add up to zero modulo 256.
public enum ACPIChecksum {
    /// The byte sum modulo 256.
    public static func sum<Bytes: Sequence>(_ bytes: Bytes) -> UInt8 where Bytes.Element == UInt8 {
        bytes.reduce(0, &+)
    }

    /// The value to store in a zeroed checksum field so that `bytes` sums to zero.
    public static func checksum<Bytes: Sequence>(for bytes: Bytes) -> UInt8 where Bytes.Element == UInt8 {
        0 &- sum(bytes)
    }

    /// Whether `bytes` (checksum byte included) sums to zero modulo 256.
    public static func isValid<Bytes: Sequence>(_ bytes: Bytes) -> Bool where Bytes.Element == UInt8 {
        sum(bytes) == 0
    }
}
