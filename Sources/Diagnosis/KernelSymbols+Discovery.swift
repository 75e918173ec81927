#if canImport(Glibc)
import Glibc
import HostCalls
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where to find symbols for a kernel file when the user gave none:
/// 1. the kernel file itself, if it is an ELF file with a `.symtab`;
/// 2. for a bzImage, `System.map-<release>` in the kernel file's directory, then in /boot,
///    where the release is the first word of the image's version string;
/// 3. for a kernel file named `vmlinuz-X` or `vmlinux-X`, `System.map-X` next to it.
public enum KernelSymbolsDiscovery {
    /// The release ("6.1.0-56-cloud-amd64") of a bzImage, from its setup header: the 16-bit
    /// `kernel_version` field at 0x20E points to a NUL-terminated version string at its
    /// value + 0x200, whose first word is the release. Nil for anything else, and for a
    /// release that is not a plain file-name fragment (letters, digits, `.-_+~`).
    public static func kernelRelease(ofBzImage path: String) -> String? {
        guard let file = try? KernelFile(path: path), file.size >= 0x210,
              let header = try? file.read(at: 0, count: 0x210),
              header[0x202 ..< 0x206].elementsEqual("HdrS".utf8),
              readLE(header, 0x206, 2) >= 0x0200  // kernel_version exists since boot protocol 2.00
        else { return nil }
        let pointer = readLE(header, 0x20E, 2)
        guard pointer != 0 else { return nil }
        let start = pointer + 0x200
        guard start < file.size, let text = try? file.read(at: start, count: Int(min(file.size - start, 256))),
              let end = text.firstIndex(of: 0)
        else { return nil }
        let release = text[..<end].prefix { $0 != 0x20 }
        guard !release.isEmpty, release.count <= 128, release.allSatisfy(isReleaseCharacter) else { return nil }
        return String(decoding: release, as: UTF8.self)
    }

    /// The places to look for symbols for the kernel at `path`, best first, without repeats.
    /// Reads the kernel file's headers; does not check that the other candidates exist.
    public static func candidatePaths(forKernel path: String) -> [String] {
        let (directory, fileName) = split(path)
        var candidates: [String] = []
        func add(_ candidate: String) {
            if !candidates.contains(candidate) { candidates.append(candidate) }
        }
        if ELFImage.hasSymbolTable(path) { add(path) }
        if let release = kernelRelease(ofBzImage: path) {
            add(join(directory, "System.map-" + release))
            add("/boot/System.map-" + release)
        }
        for prefix in ["vmlinuz-", "vmlinux-"] where fileName.hasPrefix(prefix) && fileName.count > prefix.count {
            add(join(directory, "System.map-" + fileName.dropFirst(prefix.count)))
        }
        return candidates
    }

    /// The first candidate that is usable: the kernel file itself (it is in the list only
    /// when it has a symbol table), or a readable regular file with at least one text-symbol
    /// line, so that Debian's one-line stub /boot/System.map is passed over.
    public static func locate(forKernel path: String) -> String? {
        candidatePaths(forKernel: path).first { candidate in
            candidate == path || looksLikeSystemMap(candidate)
        }
    }

    static func looksLikeSystemMap(_ path: String) -> Bool {
        guard let file = try? KernelFile(path: path),
              let bytes = try? file.readAll(limit: KernelSymbols.systemMapSizeLimit, what: "a System.map")
        else { return false }
        return KernelSymbols.parseSystemMap(bytes) != nil
    }

    private static func isReleaseCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a") ... UInt8(ascii: "z"), UInt8(ascii: "A") ... UInt8(ascii: "Z"),
             UInt8(ascii: "0") ... UInt8(ascii: "9"),
             UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "+"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    /// ("dir", "name") of "dir/name"; "." for a bare name, "/" for "/name".
    private static func split(_ path: String) -> (directory: String, fileName: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = path[..<slash]
        return (directory.isEmpty ? "/" : String(directory), String(path[path.index(after: slash)...]))
    }

    private static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}

/// A regular file opened read-only, read only in checked ranges. Closed when dropped.
struct KernelFile: ~Copyable {
    let path: String
    let size: UInt64
    private let descriptor: Int32

    init(path: String) throws(KernelSymbolsError) {
        // O_NONBLOCK: opening a FIFO must not hang; it has no effect on reading a regular file.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else {
            throw KernelSymbolsError(.unreadable, "\(path): cannot open: \(Self.errorText(errno))")
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            let error = errno
            close(descriptor)
            throw KernelSymbolsError(.unreadable, "\(path): cannot stat: \(Self.errorText(error))")
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            close(descriptor)
            throw KernelSymbolsError(.unreadable, "\(path): not a regular file")
        }
        self.path = path
        self.size = UInt64(max(status.st_size, 0))
        self.descriptor = descriptor
    }

    deinit {
        close(descriptor)
    }

    /// The whole file, if it is at most `limit` bytes.
    func readAll(limit: UInt64, what: String) throws(KernelSymbolsError) -> [UInt8] {
        guard size <= limit else {
            throw KernelSymbolsError(.tooLarge, "\(path): \(size >> 20) MiB is over the \(limit >> 20) MiB limit for \(what)")
        }
        return try read(at: 0, count: Int(size))
    }

    /// Exactly `count` bytes at `offset`, which must lie inside the file.
    func read(at offset: UInt64, count: Int) throws(KernelSymbolsError) -> [UInt8] {
        guard count >= 0, offset <= size, UInt64(count) <= size - offset, offset <= UInt64(Int.max) else {
            throw KernelSymbolsError(.unreadable, "\(path): read of \(count) bytes at \(offset) is outside the file")
        }
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            // Sound: pread writes at most `count - done` bytes starting `done` bytes into the
            // array's own buffer of `count` bytes, which stays alive and exclusive meanwhile.
            let result = retryingInterrupted {
                bytes.withUnsafeMutableBytes { buffer in
                    pread(descriptor, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                }
            }
            guard result > 0 else {
                let why = result == 0 ? "the file got shorter" : Self.errorText(errno)
                throw KernelSymbolsError(.unreadable, "\(path): cannot read: \(why)")
            }
            done += result
        }
        return bytes
    }

    private static func errorText(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}
