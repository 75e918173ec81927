// Little-endian and fixed-width ASCII helpers used to lay out ACPI structures.
// Internal to the module: tests reach them through `@testable import ACPI`.

extension Array where Element == UInt8 {
    /// Appends `value` in little-endian byte order (ACPI is little-endian throughout).
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<(T.bitWidth / 8) {
            append(UInt8(truncatingIfNeeded: value >> (index * 8)))
        }
    }

    /// Overwrites the bytes at `offset` with `value` in little-endian byte order.
    mutating func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + T.bitWidth / 8 <= count, "field outside table")
        for index in 0..<(T.bitWidth / 8) {
            self[offset + index] = UInt8(truncatingIfNeeded: value >> (index * 8))
        }
    }

    /// Reads a little-endian integer at `offset`.
    func loadLittleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        precondition(offset >= 0 && offset + T.bitWidth / 8 <= count, "field outside table")
        var value: T = 0
        for index in 0..<(T.bitWidth / 8) {
            value |= T(truncatingIfNeeded: self[offset + index]) << (index * 8)
        }
        return value
    }

    /// Appends `text` as exactly `width` ASCII bytes, padded with `padding`.
    mutating func appendFixedASCII(_ text: String, width: Int, padding: UInt8 = 0x20) {
        append(contentsOf: fixedASCII(text, width: width, padding: padding))
    }

    /// Reads `width` bytes at `offset` as ASCII text (no trimming).
    func loadASCII(at offset: Int, width: Int) -> String {
        String(decoding: self[offset..<(offset + width)], as: UTF8.self)
    }
}

/// `text` as exactly `width` printable-ASCII bytes, padded with `padding`.
func fixedASCII(_ text: String, width: Int, padding: UInt8 = 0x20) -> [UInt8] {
    let bytes = Array(text.utf8)
    precondition(bytes.count <= width, "\"\(text)\" is longer than \(width) bytes")
    precondition(bytes.allSatisfy { $0 >= 0x20 && $0 < 0x7F }, "\"\(text)\" is not printable ASCII")
    return bytes + Array(repeating: padding, count: width - bytes.count)
}

/// Rounds `value` up to a multiple of `alignment` (a power of two).
func alignUp(_ value: Int, to alignment: Int) -> Int {
    (value + alignment - 1) & ~(alignment - 1)
}
