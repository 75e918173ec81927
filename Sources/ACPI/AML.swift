/// A small encoder for ACPI Machine Language (ACPI 6.5, chapter 20): just what Kite's DSDT
/// needs: names, integers, strings, packages, buffers/resource templates, Name, Scope and
/// Device. Invalid names or out-of-range values are programming errors (preconditions).
public enum AML {
    /// Opcodes and prefixes used by this encoder.
    public enum Opcode {
        public static let zero: UInt8 = 0x00
        public static let one: UInt8 = 0x01
        public static let name: UInt8 = 0x08
        public static let bytePrefix: UInt8 = 0x0A
        public static let wordPrefix: UInt8 = 0x0B
        public static let dwordPrefix: UInt8 = 0x0C
        public static let stringPrefix: UInt8 = 0x0D
        public static let qwordPrefix: UInt8 = 0x0E
        public static let scope: UInt8 = 0x10
        public static let buffer: UInt8 = 0x11
        public static let package: UInt8 = 0x12
        public static let dualNamePrefix: UInt8 = 0x2E
        public static let multiNamePrefix: UInt8 = 0x2F
        /// ExtOpPrefix: the next byte is an extended opcode.
        public static let extendedPrefix: UInt8 = 0x5B
        /// Extended opcode (after `extendedPrefix`).
        public static let device: UInt8 = 0x82
        public static let rootChar: UInt8 = 0x5C
        public static let parentPrefix: UInt8 = 0x5E
        public static let nullName: UInt8 = 0x00
        public static let ones: UInt8 = 0xFF
    }

    /// The largest value a PkgLength can hold (28 bits).
    public static let maximumPkgLength = (1 << 28) - 1

    // MARK: PkgLength

    /// Encodes a PkgLength whose value is `value`. By definition the value counts the
    /// PkgLength bytes themselves; see `pkgLength(enclosing:)` to get that right.
    /// - Below 64: one byte, bits 0-5 hold the value.
    /// - Otherwise: the lead byte's bits 6-7 say how many bytes follow (1-3), its bits 0-3
    ///   hold the low nibble, and each following byte holds the next 8 bits.
    public static func encodePkgLength(_ value: Int) -> [UInt8] {
        precondition(value >= 0 && value <= maximumPkgLength, "PkgLength \(value) out of range")
        if value < 0x40 { return [UInt8(value)] }
        let following = value < (1 << 12) ? 1 : value < (1 << 20) ? 2 : 3
        var bytes = [UInt8(following << 6) | UInt8(value & 0x0F)]
        for index in 0..<following {
            bytes.append(UInt8(truncatingIfNeeded: value >> (4 + 8 * index)))
        }
        return bytes
    }

    /// The number of bytes `encodePkgLength(value)` produces.
    public static func pkgLengthSize(_ value: Int) -> Int {
        value < (1 << 6) ? 1 : value < (1 << 12) ? 2 : value < (1 << 20) ? 3 : 4
    }

    /// The PkgLength for an object whose contents after the PkgLength are `payloadLength`
    /// bytes: the encoded value is `payloadLength` plus the size of the PkgLength itself.
    public static func pkgLength(enclosing payloadLength: Int) -> [UInt8] {
        for size in 1...4 where pkgLengthSize(payloadLength + size) <= size {
            return encodePkgLength(payloadLength + size)
        }
        preconditionFailure("AML object of \(payloadLength) bytes is too large for a PkgLength")
    }

    /// `opcode`, then the PkgLength covering `payload`, then `payload`.
    public static func lengthPrefixed(_ opcode: [UInt8], _ payload: [UInt8]) -> [UInt8] {
        opcode + pkgLength(enclosing: payload.count) + payload
    }

    // MARK: Names

    /// Whether `segment` is a valid NameSeg of 1-4 characters ('A'-'Z' or '_' first, then
    /// 'A'-'Z', '0'-'9' or '_'); shorter segments are padded with '_' when encoded.
    public static func isValidNameSeg<S: StringProtocol>(_ segment: S) -> Bool {
        let bytes = Array(segment.utf8)
        guard (1...4).contains(bytes.count) else { return false }
        for (index, byte) in bytes.enumerated() {
            let isLead = byte == UInt8(ascii: "_") || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            let isDigit = (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            if !(isLead || (index > 0 && isDigit)) { return false }
        }
        return true
    }

    /// A 4-byte NameSeg ("_SB" becomes "_SB_").
    public static func nameSeg<S: StringProtocol>(_ segment: S) -> [UInt8] {
        precondition(isValidNameSeg(segment), "invalid AML NameSeg \"\(segment)\"")
        let bytes = Array(segment.utf8)
        return bytes + Array(repeating: UInt8(ascii: "_"), count: 4 - bytes.count)
    }

    /// A NameString: an optional root prefix ('\') or parent prefixes ('^'), then zero or more
    /// dot-separated NameSegs, e.g. "\\_SB_.VR00" or "_HID". Encodes one segment as itself,
    /// two with DualNamePrefix, more with MultiNamePrefix, none as NullName.
    public static func nameString(_ path: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var rest = Substring(path)
        if rest.first == "\\" {
            bytes.append(Opcode.rootChar)
            rest = rest.dropFirst()
        } else {
            while rest.first == "^" {
                bytes.append(Opcode.parentPrefix)
                rest = rest.dropFirst()
            }
        }
        let segments = rest.isEmpty ? [] : rest.split(separator: ".", omittingEmptySubsequences: false)
        switch segments.count {
        case 0:
            bytes.append(Opcode.nullName)
        case 1:
            bytes += nameSeg(segments[0])
        case 2:
            bytes.append(Opcode.dualNamePrefix)
            bytes += nameSeg(segments[0]) + nameSeg(segments[1])
        default:
            precondition(segments.count <= 255, "too many NameSegs in \"\(path)\"")
            bytes += [Opcode.multiNamePrefix, UInt8(segments.count)]
            for segment in segments { bytes += nameSeg(segment) }
        }
        return bytes
    }

    // MARK: Data

    /// The shortest encoding of `value`: ZeroOp, OneOp, OnesOp (all 64 bits set; Kite's
    /// DSDT is revision 2, so integers are 64-bit), else Byte/Word/DWord/QWord constant.
    public static func integer(_ value: UInt64) -> [UInt8] {
        switch value {
        case 0: [Opcode.zero]
        case 1: [Opcode.one]
        case UInt64.max: [Opcode.ones]
        case ...0xFF: byteConst(UInt8(value))
        case ...0xFFFF: wordConst(UInt16(value))
        case ...0xFFFF_FFFF: dwordConst(UInt32(value))
        default: qwordConst(value)
        }
    }

    public static func byteConst(_ value: UInt8) -> [UInt8] { [Opcode.bytePrefix, value] }

    public static func wordConst(_ value: UInt16) -> [UInt8] {
        var bytes = [Opcode.wordPrefix]
        bytes.appendLittleEndian(value)
        return bytes
    }

    public static func dwordConst(_ value: UInt32) -> [UInt8] {
        var bytes = [Opcode.dwordPrefix]
        bytes.appendLittleEndian(value)
        return bytes
    }

    public static func qwordConst(_ value: UInt64) -> [UInt8] {
        var bytes = [Opcode.qwordPrefix]
        bytes.appendLittleEndian(value)
        return bytes
    }

    /// A String constant: StringPrefix, ASCII characters 0x01-0x7F, NUL.
    public static func string(_ text: String) -> [UInt8] {
        let bytes = Array(text.utf8)
        precondition(bytes.allSatisfy { $0 >= 0x01 && $0 <= 0x7F }, "AML strings are ASCII without NUL")
        return [Opcode.stringPrefix] + bytes + [0]
    }

    /// The 32-bit compressed EISA ID of `id` ("PNP0501" -> 0x0105D041), as ASL's EISAID():
    /// three 5-bit letters (big-endian in the first two bytes) then four hex digits.
    public static func eisaID(_ id: String) -> UInt32 {
        let chars = Array(id.utf8)
        precondition(chars.count == 7, "EISA ID \"\(id)\" must be 3 letters and 4 hex digits")
        var letters: UInt16 = 0
        for char in chars[0..<3] {
            precondition((UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(char), "EISA ID \"\(id)\": bad vendor letter")
            letters = letters << 5 | UInt16(char - 0x40)
        }
        var product: UInt16 = 0
        for char in chars[3..<7] {
            let digit: UInt8
            switch char {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = char - UInt8(ascii: "0")
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = char - UInt8(ascii: "A") + 10
            default: preconditionFailure("EISA ID \"\(id)\": bad hex digit")
            }
            product = product << 4 | UInt16(digit)
        }
        let bytes = [UInt8(letters >> 8), UInt8(letters & 0xFF), UInt8(product >> 8), UInt8(product & 0xFF)]
        return bytes.loadLittleEndian(UInt32.self, at: 0)
    }

    /// Package(){elements}: PackageOp, PkgLength, NumElements, elements (at most 255).
    public static func package(_ elements: [[UInt8]]) -> [UInt8] {
        precondition(elements.count <= 255, "a Package holds at most 255 elements")
        return lengthPrefixed([Opcode.package], [UInt8(elements.count)] + elements.joined())
    }

    /// Buffer(){bytes}: BufferOp, PkgLength, BufferSize (integer), the bytes.
    public static func buffer(_ contents: [UInt8]) -> [UInt8] {
        lengthPrefixed([Opcode.buffer], integer(UInt64(contents.count)) + contents)
    }

    // MARK: Named objects and scopes

    /// Name(path, value): NameOp, NameString, DataRefObject.
    public static func name(_ path: String, _ value: [UInt8]) -> [UInt8] {
        [Opcode.name] + nameString(path) + value
    }

    /// Scope(path){terms}: ScopeOp, PkgLength, NameString, TermList.
    public static func scope(_ path: String, _ terms: [[UInt8]]) -> [UInt8] {
        lengthPrefixed([Opcode.scope], nameString(path) + terms.joined())
    }

    /// Device(path){terms}: ExtOpPrefix DeviceOp, PkgLength, NameString, TermList.
    public static func device(_ path: String, _ terms: [[UInt8]]) -> [UInt8] {
        lengthPrefixed([Opcode.extendedPrefix, Opcode.device], nameString(path) + terms.joined())
    }
}

/// An AML data object (what a Name() holds, or a Package element).
public enum AMLData: Sendable, Equatable {
    /// Shortest encoding (ZeroOp/OneOp/OnesOp/Byte/Word/DWord/QWord).
    case integer(UInt64)
    /// Always BytePrefix.
    case byte(UInt8)
    /// Always WordPrefix.
    case word(UInt16)
    /// Always DWordPrefix.
    case dword(UInt32)
    /// Always QWordPrefix.
    case qword(UInt64)
    case string(String)
    /// ASL EISAID("PNP0501"): the compressed ID as a DWord constant.
    case eisaID(String)
    case package([AMLData])
    case buffer([UInt8])
    /// ASL ResourceTemplate(): a Buffer of resource descriptors closed by an End Tag.
    case resourceTemplate([AMLResource])

    public static let zero = AMLData.integer(0)
    public static let one = AMLData.integer(1)
    public static let ones = AMLData.integer(UInt64.max)

    public func encoded() -> [UInt8] {
        switch self {
        case let .integer(value): AML.integer(value)
        case let .byte(value): AML.byteConst(value)
        case let .word(value): AML.wordConst(value)
        case let .dword(value): AML.dwordConst(value)
        case let .qword(value): AML.qwordConst(value)
        case let .string(text): AML.string(text)
        case let .eisaID(id): AML.dwordConst(AML.eisaID(id))
        case let .package(elements): AML.package(elements.map { $0.encoded() })
        case let .buffer(bytes): AML.buffer(bytes)
        case let .resourceTemplate(descriptors): AML.buffer(AMLResource.template(descriptors))
        }
    }
}

/// An AML term: a named object or a scope-opening object.
public enum AMLTerm: Sendable, Equatable {
    case name(String, AMLData)
    case scope(String, [AMLTerm])
    case device(String, [AMLTerm])

    public func encoded() -> [UInt8] {
        switch self {
        case let .name(path, value): AML.name(path, value.encoded())
        case let .scope(path, terms): AML.scope(path, terms.map { $0.encoded() })
        case let .device(path, terms): AML.device(path, terms.map { $0.encoded() })
        }
    }
}
