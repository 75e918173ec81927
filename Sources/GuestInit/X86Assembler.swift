/// A tiny x86-64 assembler: the handful of instructions the built-in init needs (moves,
/// arithmetic, byte loads and stores, jumps, calls, syscall), encoded as the Intel SDM
/// gives them, with labels resolved when the code is finished. Not a general assembler:
/// every method documents the one form it emits.
public struct X86Assembler {
    public enum Reg: UInt8, CaseIterable, Sendable {
        case rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15
        var low: UInt8 { rawValue & 7 }
        var extended: Bool { rawValue >= 8 }
    }

    /// Condition codes for `jump(if:to:)` (the low nibble of Jcc's opcode).
    public enum Condition: UInt8, Sendable {
        case below = 0x2, aboveOrEqual = 0x3, equal = 0x4, notEqual = 0x5, belowOrEqual = 0x6, above = 0x7
        case sign = 0x8, notSign = 0x9, less = 0xC, greaterOrEqual = 0xD, lessOrEqual = 0xE, greater = 0xF
        public static let zero = Condition.equal
        public static let notZero = Condition.notEqual
    }

    /// A place in the code, bound once with `bind`.
    public struct Label: Hashable, Sendable { let id: Int }

    /// ALU operations with their /digit (the ModRM reg field of 0x81) and r/m,r opcode.
    enum ALU: UInt8 {
        case add = 0, or = 1, and = 4, sub = 5, xor = 6, cmp = 7
        var registerOpcode: UInt8 { rawValue << 3 | 0x01 }   // 01 add, 09 or, 21 and, 29 sub, 31 xor, 39 cmp
    }

    public private(set) var bytes: [UInt8] = []
    private var labels: [Int: Int] = [:]          // label -> offset
    private var fixups: [(at: Int, label: Label)] = []   // rel32 fields to fill
    private var nextLabel = 0

    public init() {}

    public mutating func label() -> Label {
        defer { nextLabel += 1 }
        return Label(id: nextLabel)
    }

    public mutating func bind(_ label: Label) {
        precondition(labels[label.id] == nil, "label bound twice")
        labels[label.id] = bytes.count
    }

    /// The code with every jump and call resolved. Traps on a label never bound (a bug in
    /// the program, not in its input).
    public func finish() -> [UInt8] {
        var out = bytes
        for f in fixups {
            guard let target = labels[f.label.id] else { preconditionFailure("label never bound") }
            let rel = Int32(target - (f.at + 4))   // relative to the end of the rel32 field
            withUnsafeBytes(of: rel.littleEndian) { for (i, b) in $0.enumerated() { out[f.at + i] = b } }
        }
        return out
    }

    // MARK: Encoding helpers

    private mutating func rex(w: Bool, r: Reg? = nil, b: Reg? = nil, force: Bool = false) {
        let value: UInt8 = 0x40 | (w ? 8 : 0) | ((r?.extended ?? false) ? 4 : 0) | ((b?.extended ?? false) ? 1 : 0)
        if value != 0x40 || force { bytes.append(value) }
    }

    private mutating func modrm(mod: UInt8, reg: UInt8, rm: UInt8) {
        bytes.append(mod << 6 | (reg & 7) << 3 | (rm & 7))
    }

    private mutating func imm32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }

    /// [base + disp8] needs no SIB byte unless base is rsp or r12; the program never uses them as bases.
    private func checkBase(_ base: Reg) {
        precondition(base.low != Reg.rsp.low, "rsp/r12 as a base needs a SIB byte, which this assembler does not emit")
    }

    // MARK: Instructions

    /// `mov r32, imm32` (B8+r id), which zero-extends into the 64-bit register; or
    /// `mov r64, imm64` (REX.W B8+r io) when the value needs more than 32 bits.
    public mutating func mov(_ dst: Reg, _ value: UInt64) {
        if value <= UInt64(UInt32.max) {
            rex(w: false, b: dst)
            bytes.append(0xB8 + dst.low)
            imm32(UInt32(value))
        } else {
            rex(w: true, b: dst)
            bytes.append(0xB8 + dst.low)
            withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
        }
    }

    /// `mov r64, r64` (REX.W 89 /r).
    public mutating func mov(_ dst: Reg, _ src: Reg) { registerForm(0x89, dst, src) }

    /// `opcode r/m64, r64` with both operands registers (REX.W opcode, ModRM mod 11).
    private mutating func registerForm(_ opcode: UInt8, _ dst: Reg, _ src: Reg) {
        rex(w: true, r: src, b: dst)
        bytes.append(opcode)
        modrm(mod: 3, reg: src.rawValue, rm: dst.rawValue)
    }

    private mutating func alu(_ op: ALU, _ dst: Reg, _ src: Reg) { registerForm(op.registerOpcode, dst, src) }

    /// `op r64, imm32` (REX.W 81 /digit id; the immediate is sign-extended).
    private mutating func alu(_ op: ALU, _ dst: Reg, _ value: Int32) {
        rex(w: true, b: dst)
        bytes.append(0x81)
        modrm(mod: 3, reg: op.rawValue, rm: dst.rawValue)
        imm32(UInt32(bitPattern: value))
    }

    public mutating func add(_ dst: Reg, _ src: Reg) { alu(.add, dst, src) }
    public mutating func add(_ dst: Reg, _ value: Int32) { alu(.add, dst, value) }
    public mutating func sub(_ dst: Reg, _ src: Reg) { alu(.sub, dst, src) }
    public mutating func sub(_ dst: Reg, _ value: Int32) { alu(.sub, dst, value) }
    public mutating func and(_ dst: Reg, _ value: Int32) { alu(.and, dst, value) }
    public mutating func xor(_ dst: Reg, _ src: Reg) { alu(.xor, dst, src) }
    /// `cmp a, b` sets the flags of a - b.
    public mutating func cmp(_ a: Reg, _ b: Reg) { alu(.cmp, a, b) }
    public mutating func cmp(_ a: Reg, _ value: Int32) { alu(.cmp, a, value) }
    /// `test a, b` (REX.W 85 /r).
    public mutating func test(_ a: Reg, _ b: Reg) { registerForm(0x85, a, b) }

    /// `shr r64, imm8` (REX.W C1 /5 ib).
    public mutating func shr(_ dst: Reg, _ count: UInt8) {
        rex(w: true, b: dst)
        bytes.append(0xC1)
        modrm(mod: 3, reg: 5, rm: dst.rawValue)
        bytes.append(count)
    }

    /// `div r64` (REX.W F7 /6): rdx:rax / r, quotient in rax, remainder in rdx.
    public mutating func div(_ divisor: Reg) {
        rex(w: true, b: divisor)
        bytes.append(0xF7)
        modrm(mod: 3, reg: 6, rm: divisor.rawValue)
    }

    /// `movzx r32, byte [base + disp8]` (0F B6 /r, mod 01): zero-extends into the 64-bit register.
    public mutating func loadByte(_ dst: Reg, base: Reg, offset: Int8 = 0) {
        checkBase(base)
        rex(w: false, r: dst, b: base)
        bytes += [0x0F, 0xB6]
        modrm(mod: 1, reg: dst.rawValue, rm: base.rawValue)
        bytes.append(UInt8(bitPattern: offset))
    }

    /// `mov byte [base + disp8], r8` (88 /r, mod 01) with the low byte of rax, rcx, rdx or
    /// rbx (the byte registers that need no REX prefix).
    public mutating func storeByte(_ src: Reg, base: Reg, offset: Int8 = 0) {
        checkBase(base)
        precondition(src.rawValue < 4, "only al, cl, dl and bl are stored")
        rex(w: false, b: base)
        bytes.append(0x88)
        modrm(mod: 1, reg: src.rawValue, rm: base.rawValue)
        bytes.append(UInt8(bitPattern: offset))
    }

    /// `mov byte [base + disp8], imm8` (C6 /0 ib, mod 01).
    public mutating func storeByte(_ value: UInt8, base: Reg, offset: Int8 = 0) {
        checkBase(base)
        rex(w: false, b: base)
        bytes.append(0xC6)
        modrm(mod: 1, reg: 0, rm: base.rawValue)
        bytes.append(UInt8(bitPattern: offset))
        bytes.append(value)
    }

    /// `jmp rel32` (E9 cd).
    public mutating func jump(to target: Label) {
        bytes.append(0xE9)
        fixup(target)
    }

    /// `jcc rel32` (0F 80+cc cd).
    public mutating func jump(if condition: Condition, to target: Label) {
        bytes += [0x0F, 0x80 | condition.rawValue]
        fixup(target)
    }

    /// `call rel32` (E8 cd).
    public mutating func call(_ target: Label) {
        bytes.append(0xE8)
        fixup(target)
    }

    /// `ret` (C3).
    public mutating func ret() { bytes.append(0xC3) }

    /// `syscall` (0F 05): number in rax, arguments in rdi, rsi, rdx, r10, r8, r9; the
    /// result (or -errno) in rax; rcx and r11 are clobbered.
    public mutating func syscall() { bytes += [0x0F, 0x05] }

    private mutating func fixup(_ target: Label) {
        fixups.append((bytes.count, target))
        bytes += [0, 0, 0, 0]
    }
}
