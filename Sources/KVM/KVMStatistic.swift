import CHost
import CKVM
import Glibc

/// One counter in a KVM object's binary statistics (KVM_GET_STATS_FD, Linux 5.14+): the
/// file starts with a `kvm_stats_header`, whose descriptors (`kvm_stats_desc` plus a name
/// of `name_size` bytes each) say where each counter's u64 values are; the values are read
/// with pread whenever wanted, and are current at each read.
final class KVMStatistic: Sendable {
    private let fd: Int32
    private let offset: Int

    /// The counter `name` of the object whose fd is `objectFD`; nil when the kernel has no
    /// statistics fd or no such counter, or the file is not laid out as documented.
    init?(named name: String, statisticsOf objectFD: Int32) {
        let fd = host_ioctl_val(objectFD, CKVM_GET_STATS_FD, 0)
        guard fd >= 0 else { return nil }
        guard let offset = Self.locate(name, in: fd) else { close(fd); return nil }
        self.fd = fd
        self.offset = offset
    }

    deinit { close(fd) }

    func value() -> UInt64? {
        var v: UInt64 = 0
        // Sound: reads at most 8 bytes into the 8-byte local.
        let n = withUnsafeMutableBytes(of: &v) { pread(fd, $0.baseAddress, 8, off_t(offset)) }
        return n == 8 ? v : nil
    }

    /// The file offset of the first u64 value of counter `name`.
    static func locate(_ name: String, in fd: Int32) -> Int? {
        guard let header = read(fd, at: 0, count: MemoryLayout<kvm_stats_header>.size) else { return nil }
        let field = { (i: Int) in header[i * 4..<i * 4 + 4].reversed().reduce(0) { $0 << 8 | Int($1) } }
        let (nameSize, count, descriptors, data) = (field(1), field(2), field(4), field(5))
        let fixed = MemoryLayout<kvm_stats_desc>.size   // flags, exponent, size, offset, bucket_size
        guard (1...4096).contains(nameSize), (0...4096).contains(count), fixed == 16 else { return nil }
        let stride = fixed + nameSize
        guard let table = read(fd, at: descriptors, count: stride * count) else { return nil }
        for i in 0..<count {
            let d = table[i * stride..<(i + 1) * stride]
            let nameBytes = d.dropFirst(fixed).prefix { $0 != 0 }
            guard String(decoding: nameBytes, as: UTF8.self) == name else { continue }
            let b = d.startIndex
            let size = Int(d[b + 6]) | Int(d[b + 7]) << 8
            let valueOffset = (0..<4).reduce(0) { $0 | Int(d[b + 8 + $1]) << (8 * $1) }
            return size >= 1 ? data + valueOffset : nil
        }
        return nil
    }

    private static func read(_ fd: Int32, at offset: Int, count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        // Sound: pread writes at most `count` bytes into the buffer of `count` bytes.
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        return n == count ? bytes : nil
    }
}
