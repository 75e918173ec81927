/// A network interface as given on the command line: `tap=NAME[,mac=AA:BB:CC:DD:EE:FF]`.
/// Without `mac`, the device uses `MACAddress.derived(from: NAME)` (06:00:xx:xx:xx:xx).
public struct NetworkDeviceConfig: Equatable, Sendable {
    /// The host tap interface; created if missing, attached if it exists (persistent taps).
    public var tapName: String
    /// The guest's MAC address: unicast, not all zeroes.
    public var mac: MACAddress

    public init(tapName: String, mac: MACAddress? = nil) {
        self.tapName = tapName
        self.mac = mac ?? MACAddress.derived(from: tapName)
    }

    public static let keys = ["tap", "mac"]
    /// IFNAMSIZ - 1: the longest interface name Linux accepts.
    public static let maxTapNameLength = 15

    /// Parses the option string; every error is one line naming the offending part.
    public static func parse(_ text: String) throws(NetworkDeviceConfigError) -> NetworkDeviceConfig {
        var tap: String?
        var mac: MACAddress?
        guard !text.isEmpty else { throw .init("network needs tap=NAME") }
        for item in BlockDeviceConfig.splitOptions(text) {
            guard let equals = item.firstIndex(of: "=") else {
                throw .init(item.isEmpty ? "empty network option in '\(text)'"
                                         : "network option '\(item)' is not key=value")
            }
            let key = String(item[..<equals])
            let value = String(item[item.index(after: equals)...])
            switch key {
            case "tap":
                guard tap == nil else { throw .duplicate(key) }
                guard isValidInterfaceName(value) else {
                    throw .init("tap name '\(value)' is not a valid interface name (1-\(maxTapNameLength) characters, no '/', ':' or spaces)")
                }
                tap = value
            case "mac":
                guard mac == nil else { throw .duplicate(key) }
                guard let address = MACAddress(value) else {
                    throw .init("network mac '\(value)' is not of the form AA:BB:CC:DD:EE:FF")
                }
                guard !address.isMulticast else {
                    throw .init("network mac \(address) is a multicast address (the first octet must be even)")
                }
                guard !address.isZero else { throw .init("network mac must not be all zeroes") }
                mac = address
            default:
                throw .init("unknown network option '\(key)' (known: \(keys.joined(separator: ", ")))")
            }
        }
        guard let tap else { throw .init("network needs tap=NAME") }
        return NetworkDeviceConfig(tapName: tap, mac: mac)
    }

    /// What Linux's dev_valid_name accepts, restricted to printable ASCII.
    public static func isValidInterfaceName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= maxTapNameLength, name != ".", name != ".." else { return false }
        return bytes.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: ":") }
    }
}

/// A bad network option string; `description` is the one-line message for the user.
public struct NetworkDeviceConfigError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
    static func duplicate(_ key: String) -> Self { .init("network option \(key) is given twice") }
}
