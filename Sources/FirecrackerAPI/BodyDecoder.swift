import JSON

/// A request body or config-file section that does not match Firecracker's schema. Its
/// description is what Firecracker's serde would say (clients log it; none parses it).
public struct SchemaError: Error, Equatable, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
    /// A body that is not the schema's shape, which Firecracker words as a serde error.
    public init(serde message: String) {
        description = "An error occurred when deserializing the json body of a request: \(message)."
    }
}

/// Reads one JSON object the way Firecracker's `#[serde(deny_unknown_fields)]` structs do:
/// an unknown or repeated field is an error, `null` is the same as absent for optional
/// fields, and every value must have its field's type.
struct ObjectDecoder {
    private let members: [(key: String, value: JSONValue)]

    /// `denyUnknown: false` for the few structs (MetricsConfig, the config file's top level)
    /// that Firecracker reads leniently.
    init(_ value: JSONValue, fields: [String], denyUnknown: Bool = true) throws(SchemaError) {
        guard case .object(let members) = value else {
            throw SchemaError(serde: "invalid type: \(value.kindDescription), expected a map")
        }
        var seen = Set<String>()
        for m in members {
            if denyUnknown && !fields.contains(m.key) {
                throw SchemaError(serde: "unknown field `\(m.key)`, expected "
                                  + (fields.count == 1 ? "`\(fields[0])`" : "one of " + fields.map { "`\($0)`" }.joined(separator: ", ")))
            }
            guard seen.insert(m.key).inserted else { throw SchemaError(serde: "duplicate field `\(m.key)`") }
        }
        self.members = members
    }

    /// The field's value; nil when absent or null.
    func value(_ key: String) -> JSONValue? {
        guard let v = members.first(where: { $0.key == key })?.value else { return nil }
        if case .null = v { return nil }
        return v
    }

    func has(_ key: String) -> Bool { value(key) != nil }

    func required<T>(_ key: String, _ read: (String) throws(SchemaError) -> T?) throws(SchemaError) -> T {
        guard let v = try read(key) else { throw SchemaError(serde: "missing field `\(key)`") }
        return v
    }

    func string(_ key: String) throws(SchemaError) -> String? {
        guard let v = value(key) else { return nil }
        guard case .string(let s) = v else { throw SchemaError(serde: "invalid type: \(v.kindDescription), expected a string") }
        return s
    }

    func bool(_ key: String) throws(SchemaError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard case .bool(let b) = v else { throw SchemaError(serde: "invalid type: \(v.kindDescription), expected a boolean") }
        return b
    }

    /// A non-negative integer at most `max` (`typeName` is the Rust type serde would name).
    func unsigned(_ key: String, max: UInt64, typeName: String) throws(SchemaError) -> UInt64? {
        guard let v = value(key) else { return nil }
        switch v {
        case .integer(let i) where i >= 0:
            guard UInt64(i) <= max else { throw SchemaError(serde: "invalid value: integer `\(i)`, expected \(typeName)") }
            return UInt64(i)
        case .integer(let i): throw SchemaError(serde: "invalid value: integer `\(i)`, expected \(typeName)")
        default: throw SchemaError(serde: "invalid type: \(v.kindDescription), expected \(typeName)")
        }
    }

    /// One of `variants`, spelled exactly (serde's unit enums).
    func variant(_ key: String, _ variants: [String]) throws(SchemaError) -> String? {
        guard let s = try string(key) else { return nil }
        guard variants.contains(s) else {
            throw SchemaError(serde: "unknown variant `\(s)`, expected "
                              + (variants.count == 1 ? "`\(variants[0])`" : "one of " + variants.map { "`\($0)`" }.joined(separator: ", ")))
        }
        return s
    }

    /// A rate limiter: Kite has none, so only an empty one (`{}`, or buckets of size 0, which
    /// Firecracker treats as unlimited) is accepted; Kata sends `{}` for "no limit".
    func unlimitedRateLimiter(_ key: String) throws(SchemaError) {
        guard let v = value(key) else { return }
        let limiter = try ObjectDecoder(v, fields: ["bandwidth", "ops"])
        for bucket in ["bandwidth", "ops"] {
            guard let b = limiter.value(bucket) else { continue }
            let tb = try ObjectDecoder(b, fields: ["size", "one_time_burst", "refill_time"])
            let size = try tb.required("size") { k throws(SchemaError) in try tb.unsigned(k, max: UInt64.max, typeName: "u64") }
            _ = try tb.required("refill_time") { k throws(SchemaError) in try tb.unsigned(k, max: UInt64.max, typeName: "u64") }
            let burst = try tb.unsigned("one_time_burst", max: UInt64.max, typeName: "u64") ?? 0
            if size != 0 || burst != 0 {
                throw SchemaError("\(key): Kite has no rate limiters; leave it out or send {} (no limit)")
            }
        }
    }
}

/// Firecracker's resource ids (`checked_id`): non-empty, letters, digits and underscores.
func checkedID(_ id: String) throws(SchemaError) -> String {
    guard !id.isEmpty else { throw SchemaError("The ID cannot be empty.") }
    guard id.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F }) else {
        throw SchemaError("API Resource IDs can only contain alphanumeric characters and underscores.")
    }
    return id
}
