// A small JSON writer (Kite does without Foundation: Docs/Lighter-findings.md; hang reports, kite boot-test and
// the Firecracker API use it). Reports carry text the
// guest wrote (task names, headlines), so every string is escaped, not trusted.

/// A JSON value under construction; `JSONWriter.write` turns it into text.
public enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case integer(Int)
    /// A non-finite number (infinity, NaN) is written as null: JSON has no such numbers.
    case number(Double)
    case string(String)
    case array([JSONValue])
    /// Members in the order given (duplicated keys are the caller's mistake).
    case object([(key: String, value: JSONValue)])

    /// A 64-bit register or address as a "0x…" string: JSON numbers are doubles in most
    /// readers and would lose the low bits.
    public static func hex(_ value: UInt64) -> JSONValue { .string("0x" + String(value, radix: 16)) }

    /// `transform(value)`, or null.
    public static func optional<T>(_ value: T?, _ transform: (T) -> JSONValue) -> JSONValue {
        value.map(transform) ?? .null
    }

    public static func integers(_ values: [some BinaryInteger]) -> JSONValue { .array(values.map { .integer(Int($0)) }) }
}

public enum JSONWriter {
    /// The value as compact JSON on one line.
    public static func write(_ value: JSONValue) -> String {
        var out = ""
        write(value, into: &out)
        return out
    }

    static func write(_ value: JSONValue, into out: inout String) {
        switch value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .integer(let i): out += String(i)
        case .number(let d): out += d.isFinite ? d.description : "null"
        case .string(let s): appendQuoted(s, to: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                write(item, into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, member) in members.enumerated() {
                if i > 0 { out += "," }
                appendQuoted(member.key, to: &out)
                out += ":"
                write(member.value, into: &out)
            }
            out += "}"
        }
    }

    /// `text` as a JSON string literal: quotes and backslashes escaped, control characters
    /// as \n, \t, ... or \u00XX, and U+2028/U+2029 escaped too (JavaScript reads those
    /// as line ends). Everything else is written as UTF-8.
    public static func quoted(_ text: String) -> String {
        var out = ""
        appendQuoted(text, to: &out)
        return out
    }

    private static func appendQuoted(_ text: String, to out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                let v = scalar.value
                if v < 0x20 || v == 0x7F || v == 0x2028 || v == 0x2029 {
                    let digits = String(v, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}
