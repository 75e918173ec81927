/// A static x86-64 ELF executable (ET_EXEC, no interpreter, no sections) with two PT_LOAD
/// segments: the headers and code, read + execute, at `textAddress`; the data, read +
/// write, at `dataAddress`, followed by `bssSize` zero bytes. The data's file offset is
/// page-aligned so its address is exactly `dataAddress` (the ELF rule: offset and address
/// agree modulo the page size).
public enum ELFWriter {
    public static let textAddress: UInt64 = 0x40_0000
    public static let dataAddress: UInt64 = 0x60_0000
    static let pageSize = 0x1000
    static let headerSize = 64
    static let programHeaderSize = 56
    /// Where the code starts in the file and in memory (after the ELF header and two program headers).
    public static let codeOffset = headerSize + 2 * programHeaderSize
    public static var entryAddress: UInt64 { textAddress + UInt64(codeOffset) }

    /// The executable: `code` is entered at its first byte (`entryAddress`).
    public static func executable(code: [UInt8], data: [UInt8], bssSize: Int) -> [UInt8] {
        let textSize = codeOffset + code.count
        let dataOffset = (textSize + pageSize - 1) / pageSize * pageSize
        var out: [UInt8] = []
        // ELF header
        out += [0x7F, 0x45, 0x4C, 0x46]          // \x7fELF
        out += [2, 1, 1, 0]                      // ELFCLASS64, little-endian, version 1, System V ABI
        out += [UInt8](repeating: 0, count: 8)   // ABI version, padding
        le16(&out, 2)                            // e_type ET_EXEC
        le16(&out, 0x3E)                         // e_machine EM_X86_64
        le32(&out, 1)                            // e_version
        le64(&out, entryAddress)                 // e_entry
        le64(&out, UInt64(headerSize))           // e_phoff
        le64(&out, 0)                            // e_shoff: no sections
        le32(&out, 0)                            // e_flags
        le16(&out, UInt16(headerSize))           // e_ehsize
        le16(&out, UInt16(programHeaderSize))    // e_phentsize
        le16(&out, 2)                            // e_phnum
        le16(&out, 64)                           // e_shentsize
        le16(&out, 0)                            // e_shnum
        le16(&out, 0)                            // e_shstrndx
        // PT_LOAD text: R+X, from file offset 0 (the headers ride along, as in any linker's output)
        programHeader(&out, flags: 5, offset: 0, address: textAddress, fileSize: textSize, memorySize: textSize)
        // PT_LOAD data: R+W, data then bss
        programHeader(&out, flags: 6, offset: dataOffset, address: dataAddress, fileSize: data.count,
                      memorySize: data.count + bssSize)
        precondition(out.count == codeOffset)
        out += code
        out += [UInt8](repeating: 0, count: dataOffset - out.count)
        out += data
        return out
    }

    private static func programHeader(_ out: inout [UInt8], flags: UInt32, offset: Int, address: UInt64,
                                      fileSize: Int, memorySize: Int) {
        le32(&out, 1)                   // p_type PT_LOAD
        le32(&out, flags)               // p_flags: 4 R, 2 W, 1 X
        le64(&out, UInt64(offset))
        le64(&out, address)             // p_vaddr
        le64(&out, address)             // p_paddr
        le64(&out, UInt64(fileSize))
        le64(&out, UInt64(memorySize))
        le64(&out, UInt64(pageSize))    // p_align
    }
}

func le16(_ out: inout [UInt8], _ v: UInt16) { out += [UInt8(v & 0xFF), UInt8(v >> 8)] }
func le32(_ out: inout [UInt8], _ v: UInt32) { for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
func le64(_ out: inout [UInt8], _ v: UInt64) { for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
