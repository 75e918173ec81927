// A strict JSON reader (RFC 8259) for text from outside: Firecracker API request bodies and
// config files. It never trusts its input: nesting is bounded, numbers that do not fit are
// errors, and every error says where (line and column, as serde_json does, since Firecracker's
// clients log those messages).

/// Why a text is not JSON, and where.
public struct JSONReadError: Error, Equatable, CustomStringConvertible, Sendable {
    public let message: String
    public let line: Int
    public let column: Int
    public var description: String { "\(message) at line \(line) column \(column)" }
}

public enum JSONReader {
    /// Deeper nesting than this is refused (no request of Firecracker's API nests past 4).
    public static let maxDepth = 64

    /// Reads one JSON value; whitespace may surround it, nothing else may follow.
    public static func read(_ bytes: some Collection<UInt8>) throws(JSONReadError) -> JSONValue {
        var parser = Parser(bytes: Array(bytes))
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        if parser.index < parser.bytes.count { throw parser.error("trailing characters") }
        return value
    }

    public static func read(_ text: String) throws(JSONReadError) -> JSONValue {
        try read(Array(text.utf8))
    }
}

private struct Parser {
    let bytes: [UInt8]
    var index = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// An error at the byte being looked at, or (`consumed`) at the one just read.
    func error(_ message: String, consumed: Bool = false) -> JSONReadError {
        var line = 1
        var column = 0
        for b in bytes[..<min(consumed ? index : index + 1, bytes.count)] {
            if b == UInt8(ascii: "\n") { line += 1; column = 0 } else { column += 1 }
        }
        return JSONReadError(message: message, line: line, column: column)
    }

    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    mutating func skipSpace() {
        while let b = peek, b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { index += 1 }
    }

    mutating func value(depth: Int) throws(JSONReadError) -> JSONValue {
        guard let b = peek else { throw error("EOF while parsing a value") }
        switch b {
        case UInt8(ascii: "{"):
            guard depth < JSONReader.maxDepth else { throw error("recursion limit exceeded") }
            return try object(depth: depth + 1)
        case UInt8(ascii: "["):
            guard depth < JSONReader.maxDepth else { throw error("recursion limit exceeded") }
            return try array(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw error("expected value")
        }
    }

    mutating func literal(_ word: String) throws(JSONReadError) {
        for expected in word.utf8 {
            guard peek == expected else { throw error("expected ident") }
            index += 1
        }
    }

    mutating func object(depth: Int) throws(JSONReadError) -> JSONValue {
        index += 1  // {
        var members: [(key: String, value: JSONValue)] = []
        skipSpace()
        if peek == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            skipSpace()
            guard peek == UInt8(ascii: "\"") else {
                throw error(peek == nil ? "EOF while parsing an object" : "key must be a string")
            }
            let key = try string()
            skipSpace()
            guard peek == UInt8(ascii: ":") else {
                throw error(peek == nil ? "EOF while parsing an object" : "expected `:`")
            }
            index += 1
            skipSpace()
            members.append((key, try value(depth: depth)))
            skipSpace()
            switch peek {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"): index += 1; return .object(members)
            case nil: throw error("EOF while parsing an object")
            default: throw error("expected `,` or `}`")
            }
        }
    }

    mutating func array(depth: Int) throws(JSONReadError) -> JSONValue {
        index += 1  // [
        var items: [JSONValue] = []
        skipSpace()
        if peek == UInt8(ascii: "]") { index += 1; return .array(items) }
        while true {
            skipSpace()
            items.append(try value(depth: depth))
            skipSpace()
            switch peek {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"): index += 1; return .array(items)
            case nil: throw error("EOF while parsing a list")
            default: throw error("expected `,` or `]`")
            }
        }
    }

    mutating func string() throws(JSONReadError) -> String {
        index += 1  // "
        var scalars = String.UnicodeScalarView()
        var run: [UInt8] = []  // raw UTF-8 since the last escape
        func flush(_ run: inout [UInt8], into scalars: inout String.UnicodeScalarView) {
            if !run.isEmpty { scalars.append(contentsOf: String(decoding: run, as: UTF8.self).unicodeScalars); run.removeAll() }
        }
        while true {
            guard let b = peek else { throw error("EOF while parsing a string") }
            index += 1
            switch b {
            case UInt8(ascii: "\""):
                // Invalid UTF-8 is refused, not replaced: what the client sent is what it meant.
                guard String(validating: run, as: UTF8.self) != nil else {
                    throw error("invalid unicode in string")
                }
                flush(&run, into: &scalars)
                return String(scalars)
            case UInt8(ascii: "\\"):
                guard String(validating: run, as: UTF8.self) != nil else { throw error("invalid unicode in string") }
                flush(&run, into: &scalars)
                guard let e = peek else { throw error("EOF while parsing a string") }
                index += 1
                switch e {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        guard peek == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                            throw error("lone leading surrogate in hex escape")
                        }
                        index += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw error("lone leading surrogate in hex escape") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(code) {
                        throw error("lone trailing surrogate in hex escape", consumed: true)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw error("invalid escape") }
                    scalars.append(scalar)
                default: throw error("invalid escape", consumed: true)
                }
            default:
                if b < 0x20 { throw error("control character (\\u0000-\\u001F) found while parsing a string", consumed: true) }
                run.append(b)
            }
        }
    }

    mutating func hex4() throws(JSONReadError) -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let b = peek else { throw error("EOF while parsing a string") }
            let digit: UInt32
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
            default: throw error("invalid escape")
            }
            v = v << 4 | digit
            index += 1
        }
        return v
    }

    /// An integer when it has no fraction or exponent and fits an Int; else a Double.
    mutating func number() throws(JSONReadError) -> JSONValue {
        let start = index
        if peek == UInt8(ascii: "-") { index += 1 }
        guard let first = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
            throw error("invalid number")
        }
        index += 1
        if first != UInt8(ascii: "0") { skipDigits() }
        var integral = true
        if peek == UInt8(ascii: ".") {
            integral = false
            index += 1
            guard skipDigits() > 0 else { throw error("invalid number") }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            integral = false
            index += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { index += 1 }
            guard skipDigits() > 0 else { throw error("invalid number") }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if integral {
            if let i = Int(text) { return .integer(i) }
            if !text.hasPrefix("-"), let u = UInt64(text) { return .number(Double(u)) }  // beyond Int: a range error later
        }
        guard let d = Double(text), d.isFinite else { throw error("number out of range") }
        return .number(d)
    }

    @discardableResult
    mutating func skipDigits() -> Int {
        var n = 0
        while let b = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) { index += 1; n += 1 }
        return n
    }
}

extension JSONValue {
    /// The member named `key` of an object (the first, if the text repeated it).
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// What kind of value this is, in serde's words ("a string", "an integer", ...).
    public var kindDescription: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return "boolean `\(b)`"
        case .integer(let i): return "integer `\(i)`"
        case .number(let d): return "floating point `\(d)`"
        case .string(let s): return "string \(JSONWriter.quoted(s))"
        case .array: return "a sequence"
        case .object: return "a map"
        }
    }
}
