/// Little-endian helpers for building guest structures (boot_params, page tables, ...)
/// in a plain byte array before they are copied into guest RAM.
extension Array where Element == UInt8 {
    public mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "field outside buffer")
        var v = value.littleEndian
        Swift.withUnsafeBytes(of: &v) { raw in
            for i in 0..<raw.count { self[offset + i] = raw[i] }
        }
    }

    public func get<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        guard offset >= 0, offset + MemoryLayout<T>.size <= count else { return nil }
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(self[offset + i]) << (8 * i) }
        return v
    }
}
