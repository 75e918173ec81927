/// A vsock device as given on the command line: `cid=N,socket=PATH`. The host listens on
/// the Unix socket PATH (host-initiated connections: `CONNECT <port>\n`), and guest
/// connections to host port P go to the Unix socket `PATH_P`.
public struct VsockDeviceConfig: Equatable, Sendable {
    /// The guest's context id: 3...UInt32.max - 1 (0-2 are reserved, UINT32_MAX is VMADDR_CID_ANY).
    public var guestCID: UInt64
    public var socketPath: String

    public init(guestCID: UInt64, socketPath: String) {
        self.guestCID = guestCID
        self.socketPath = socketPath
    }

    public static let keys = ["cid", "socket"]
    public static let validCIDs: ClosedRange<UInt64> = 3...UInt64(UInt32.max - 1)
    /// sizeof(sockaddr_un.sun_path) - 1.
    public static let maxSocketPathLength = 107

    /// Parses the option string; every error is one line naming the offending part.
    public static func parse(_ text: String) throws(VsockDeviceConfigError) -> VsockDeviceConfig {
        var cid: UInt64?
        var path: String?
        guard !text.isEmpty else { throw .init("vsock needs cid=N,socket=PATH") }
        for item in BlockDeviceConfig.splitOptions(text) {
            guard let equals = item.firstIndex(of: "=") else {
                throw .init(item.isEmpty ? "empty vsock option in '\(text)'"
                                         : "vsock option '\(item)' is not key=value")
            }
            let key = String(item[..<equals])
            let value = String(item[item.index(after: equals)...])
            switch key {
            case "cid":
                guard cid == nil else { throw .duplicate(key) }
                guard !value.isEmpty, value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                      let number = UInt64(value), validCIDs.contains(number) else {
                    throw .init("vsock cid '\(value)' is not a number in \(validCIDs.lowerBound)...\(validCIDs.upperBound)")
                }
                cid = number
            case "socket":
                guard path == nil else { throw .duplicate(key) }
                guard !value.isEmpty else { throw .init("vsock socket path is empty") }
                guard !value.utf8.contains(0) else { throw .init("vsock socket path contains a NUL byte") }
                guard value.utf8.count <= maxSocketPathLength else {
                    throw .init("vsock socket path is \(value.utf8.count) bytes (a Unix socket path holds at most \(maxSocketPathLength))")
                }
                path = value
            default:
                throw .init("unknown vsock option '\(key)' (known: \(keys.joined(separator: ", ")))")
            }
        }
        guard let cid else { throw .init("vsock needs cid=N") }
        guard let path else { throw .init("vsock needs socket=PATH") }
        return VsockDeviceConfig(guestCID: cid, socketPath: path)
    }
}

/// A bad vsock option string; `description` is the one-line message for the user.
public struct VsockDeviceConfigError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
    static func duplicate(_ key: String) -> Self { .init("vsock option \(key) is given twice") }
}
