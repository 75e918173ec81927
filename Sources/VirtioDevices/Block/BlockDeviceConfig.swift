/// A disk as given on the command line: `path=FILE[,readonly=on|off][,serial=ID]`.
/// A comma inside a value is written twice (`path=a,,b.img` names `a,b.img`).
public struct BlockDeviceConfig: Equatable, Sendable {
    public var path: String
    public var readOnly: Bool
    /// Returned by GET_ID (Linux shows it as the disk's serial); at most 20 bytes.
    public var serial: String?

    public init(path: String, readOnly: Bool = false, serial: String? = nil) {
        self.path = path
        self.readOnly = readOnly
        self.serial = serial
    }

    public static let keys = ["path", "readonly", "serial"]

    /// Parses the option string; every error is one line naming the offending part.
    public static func parse(_ text: String) throws(BlockDeviceConfigError) -> BlockDeviceConfig {
        var path: String?
        var readOnly: Bool?
        var serial: String?
        guard !text.isEmpty else { throw .init("disk needs path=FILE") }
        for item in splitOptions(text) {
            guard let equals = item.firstIndex(of: "=") else {
                throw .init(item.isEmpty ? "empty disk option in '\(text)'"
                                         : "disk option '\(item)' is not key=value")
            }
            let key = String(item[..<equals])
            let value = String(item[item.index(after: equals)...])
            switch key {
            case "path":
                guard path == nil else { throw .duplicate(key) }
                guard !value.isEmpty else { throw .init("disk path is empty") }
                path = value
            case "readonly":
                guard readOnly == nil else { throw .duplicate(key) }
                switch value {
                case "on": readOnly = true
                case "off": readOnly = false
                default: throw .init("disk option readonly must be on or off, not '\(value)'")
                }
            case "serial":
                guard serial == nil else { throw .duplicate(key) }
                guard value.utf8.count <= BlockDevice.serialLength else {
                    throw .init("disk serial '\(value)' is \(value.utf8.count) bytes; the most is \(BlockDevice.serialLength)")
                }
                guard value.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
                    throw .init("disk serial must be printable ASCII")
                }
                serial = value
            default:
                throw .init("unknown disk option '\(key)' (known: \(keys.joined(separator: ", ")))")
            }
        }
        guard let path else { throw .init("disk needs path=FILE") }
        return BlockDeviceConfig(path: path, readOnly: readOnly ?? false, serial: serial)
    }

    /// Splits at single commas; ",," stands for a literal comma.
    static func splitOptions(_ text: String) -> [String] {
        var items: [String] = []
        var current = ""
        var characters = text.makeIterator()
        var pending = characters.next()
        while let c = pending {
            pending = characters.next()
            if c == "," {
                if pending == "," {
                    current.append(",")
                    pending = characters.next()
                } else {
                    items.append(current)
                    current = ""
                }
            } else {
                current.append(c)
            }
        }
        items.append(current)
        return items
    }
}

/// A bad disk option string; `description` is the one-line message for the user.
public struct BlockDeviceConfigError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
    static func duplicate(_ key: String) -> Self { .init("disk option \(key) is given twice") }
}
