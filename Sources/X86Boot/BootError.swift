/// Why a kernel, initrd or command line cannot be booted. Each case reads as one line.
public enum BootError: Error, Equatable, CustomStringConvertible {
    case cannotRead(path: String, reason: String)
    case notAKernel(String)
    case truncatedKernel(String)
    case unsupportedKernel(String)
    case commandLineTooLong(length: Int, maximum: Int)
    case initrdTooLarge(initrd: UInt64, available: UInt64)
    case memoryTooSmall(needed: UInt64, have: UInt64)
    case kernelOutsideRAM(String)
    case kernelOverlapsBootData(String)

    public var description: String {
        switch self {
        case .cannotRead(let p, let r): return "cannot read \(p): \(r)"
        case .notAKernel(let s): return "not a kernel Kite can boot: \(s)"
        case .truncatedKernel(let s): return "kernel image is truncated: \(s)"
        case .unsupportedKernel(let s): return "unsupported kernel: \(s)"
        case .commandLineTooLong(let l, let m):
            return "kernel command line is \(l) bytes; this kernel accepts at most \(m)"
        case .initrdTooLarge(let i, let a):
            return "initrd is \(mib(i)) but only \(mib(a)) of guest RAM is free above the kernel; raise --memory"
        case .memoryTooSmall(let n, let h):
            return "guest memory \(mib(h)) is too small for this kernel (needs at least \(mib(n))); raise --memory"
        case .kernelOutsideRAM(let s): return "kernel does not fit in guest RAM: \(s)"
        case .kernelOverlapsBootData(let s): return "kernel would overwrite Kite's boot data: \(s)"
        }
    }
}

/// Bytes as MiB, rounded up; no overflow for any value (a hostile header can ask for UInt64.max).
func mib(_ bytes: UInt64) -> String {
    "\((bytes >> 20) + (bytes % (1 << 20) == 0 ? 0 : 1)) MiB"
}
