#if canImport(Glibc)
import Glibc
#endif

/// A failed KVM operation: which ioctl or call, and the errno it returned.
public struct KVMError: Error, CustomStringConvertible, Equatable {
    public let operation: String
    public let errno: Int32

    public init(_ operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        "\(operation): \(String(cString: strerror(errno)))"
    }
}

/// Runs a CKVM call that returns a result or -errno and throws on failure.
@inline(__always)
func check(_ operation: @autoclosure () -> String, _ result: Int32) throws(KVMError) -> Int32 {
    if result < 0 { throw KVMError(operation(), errno: -result) }
    return result
}
