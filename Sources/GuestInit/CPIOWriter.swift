/// A cpio archive in the "newc" format (magic 070701), the one Linux unpacks as an
/// initramfs: each entry is a 110-byte ASCII header (13 eight-digit hex fields), the name
/// with its NUL padded to 4 bytes, the data padded to 4 bytes; "TRAILER!!!" ends it.
public struct CPIOWriter {
    public enum Kind: Sendable {
        case directory
        case file([UInt8], executable: Bool)
        /// A character device node (major, minor), e.g. /dev/console = 5:1.
        case characterDevice(major: UInt32, minor: UInt32)
    }

    public private(set) var bytes: [UInt8] = []
    private var inode: UInt32 = 1

    public init() {}

    /// Adds `path` (relative, no leading slash: "init", "dev/console"). Parent directories
    /// come first, as the kernel creates entries in order.
    public mutating func add(_ path: String, _ kind: Kind) {
        precondition(!path.hasPrefix("/") && !path.isEmpty, "cpio names are relative")
        let mode: UInt32, data: [UInt8], nlink: UInt32, rdev: (UInt32, UInt32)
        switch kind {
        case .directory: (mode, data, nlink, rdev) = (0o040755, [], 2, (0, 0))
        case .file(let contents, let executable):
            (mode, data, nlink, rdev) = (0o100000 | (executable ? 0o755 : 0o644), contents, 1, (0, 0))
        case .characterDevice(let major, let minor): (mode, data, nlink, rdev) = (0o020600, [], 1, (major, minor))
        }
        entry(name: path, mode: mode, nlink: nlink, data: data, rdev: rdev)
    }

    /// The archive, with its trailer.
    public func finish() -> [UInt8] {
        var copy = self
        copy.entry(name: "TRAILER!!!", mode: 0, nlink: 1, data: [], rdev: (0, 0), inode: 0)
        return copy.bytes
    }

    private mutating func entry(name: String, mode: UInt32, nlink: UInt32, data: [UInt8], rdev: (UInt32, UInt32),
                                inode explicit: UInt32? = nil) {
        let ino = explicit ?? inode
        if explicit == nil { inode += 1 }
        let nameBytes = Array(name.utf8) + [0]
        let fields: [UInt32] = [ino, mode, 0, 0, nlink, 0, UInt32(data.count), 0, 0, rdev.0, rdev.1,
                                UInt32(nameBytes.count), 0]
        //  ino   mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        bytes += Array("070701".utf8)
        for f in fields { bytes += Array(hex8(f).utf8) }
        bytes += nameBytes
        pad()
        bytes += data
        pad()
    }

    private mutating func pad() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    private func hex8(_ v: UInt32) -> String {
        let digits = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}
