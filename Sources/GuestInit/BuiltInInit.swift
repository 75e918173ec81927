/// Kite's built-in initramfs for `kite boot-test`: /dev/console, /dev/mem and /init, a
/// static x86-64 program generated here (no busybox, no C compiler, nothing fetched) that
///
/// 1. writes 123 to the boot timer at guest physical 0xc0000000 through /dev/mem (Kite's
///    init marker, which `kite run --boot-timing` reports: the time to userspace);
/// 2. prints `kite-init: Linux <release>` from uname();
/// 3. counts the CPUs in its affinity mask (sched_getaffinity(0): the task's mask ANDed
///    with the active CPUs; Linux brings every CPU up before it starts init) and prints
///    `kite-init: PASS: N of N CPUs online` when that is the count it was built for, else
///    `kite-init: FAIL: M of N CPUs online`;
/// 4. powers off with reboot(LINUX_REBOOT_CMD_POWER_OFF) (Linux then uses ACPI S5, which
///    Kite provides). If that returns, it prints a FAIL line and exits (the kernel panics).
///
/// The expected count is built into the program: Kite makes one archive per CPU count.
public enum BuiltInInit {
    public static let passPrefix = "kite-init: PASS: "
    public static let failPrefix = "kite-init: FAIL: "
    public static let releasePrefix = "kite-init: Linux "

    /// What the program does once it has checked the CPUs.
    public enum Ending: Sendable {
        /// reboot(LINUX_REBOOT_CMD_POWER_OFF): the guest's init.
        case powerOff
        /// exit(0) when the count matched, exit(1) otherwise, and no boot timer marker (it
        /// needs /dev/mem): a mode that makes only harmless system calls, for running the
        /// program as an ordinary process on the host in tests.
        case exitForTesting
    }

    /// Linux x86-64 system call numbers and constants the program uses.
    enum Linux {
        static let write: UInt64 = 1, open: UInt64 = 2, mmap: UInt64 = 9, exit: UInt64 = 60, uname: UInt64 = 63
        static let reboot: UInt64 = 169, schedGetaffinity: UInt64 = 204
        static let oReadWrite: UInt64 = 0o2, oSync: UInt64 = 0o4010000
        static let protReadWrite: UInt64 = 3, mapShared: UInt64 = 1
        static let rebootMagic1: UInt64 = 0xFEE1_DEAD, rebootMagic2: UInt64 = 0x2812_1969   // 672274793
        static let rebootPowerOff: UInt64 = 0x4321_FEDC
        /// struct utsname: six fields of 65 bytes; release is the third.
        static let utsFieldSize = 65
    }

    /// Kite's boot timer (Sources/Devices/BootTimer.swift): a byte write of 123 at this
    /// guest physical address is the init marker.
    public static let bootTimerAddress: UInt64 = 0xC000_0000
    public static let bootTimerMarker: UInt8 = 123
    /// Affinity mask buffer: 1024 CPUs, Kite's maximum.
    static let maskBytes = 128

    /// The /init executable for a guest that should have `expectedCPUs` CPUs online.
    public static func program(expectedCPUs: Int, ending: Ending = .powerOff) -> [UInt8] {
        precondition(expectedCPUs >= 1 && expectedCPUs <= maskBytes * 8)
        var data = DataLayout()
        let devMem = data.string("/dev/mem\0")
        let noMarker = data.string("kite-init: cannot write the boot timer's init marker through /dev/mem\n")
        let linux = data.string(releasePrefix)
        let newline = data.string("\n")
        let pass = data.string(passPrefix)
        let fail = data.string(failPrefix)
        let ofExpected = data.string(" of \(expectedCPUs) CPUs online\n")
        let rebootFailed = data.string(failPrefix + "reboot(LINUX_REBOOT_CMD_POWER_OFF) returned\n")
        let uts = data.reserve(6 * Linux.utsFieldSize)
        let mask = data.reserve(maskBytes)
        let digits = data.reserve(24)
        let digitsEnd = digits + 24

        var a = X86Assembler()
        let writeString = a.label(), printDecimal = a.label()
        typealias R = X86Assembler.Reg

        // 1. The init marker: fd = open("/dev/mem", O_RDWR|O_SYNC); p = mmap(0, 4096,
        //    PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0xc0000000); *p = 123.
        if case .powerOff = ending {
            let failed = a.label(), marked = a.label()
            a.mov(.rax, Linux.open)
            a.mov(.rdi, devMem.address)
            a.mov(.rsi, Linux.oReadWrite | Linux.oSync)
            a.mov(.rdx, 0)
            a.syscall()
            a.test(.rax, .rax)
            a.jump(if: .sign, to: failed)
            a.mov(.r8, .rax)                       // fd
            a.mov(.rax, Linux.mmap)
            a.mov(.rdi, 0)
            a.mov(.rsi, 4096)
            a.mov(.rdx, Linux.protReadWrite)
            a.mov(.r10, Linux.mapShared)
            a.mov(.r9, bootTimerAddress)           // offset = the physical address
            a.syscall()
            a.cmp(.rax, -4096)                     // -4095...-1 is -errno: unsigned, above -4096
            a.jump(if: .above, to: failed)
            a.storeByte(bootTimerMarker, base: .rax)
            a.jump(to: marked)
            a.bind(failed)
            a.mov(.rsi, noMarker.address)
            a.mov(.rdx, noMarker.length)
            a.call(writeString)
            a.bind(marked)
        }

        // 2. uname(&uts); "kite-init: Linux " + release + "\n".
        a.mov(.rax, Linux.uname)
        a.mov(.rdi, uts)
        a.syscall()
        a.mov(.rsi, linux.address)
        a.mov(.rdx, linux.length)
        a.call(writeString)
        let release = uts + UInt64(2 * Linux.utsFieldSize)
        let scan = a.label(), scanned = a.label()
        a.mov(.rdi, release)
        a.bind(scan)                               // rdi = the release's terminating NUL
        a.loadByte(.rax, base: .rdi)
        a.test(.rax, .rax)
        a.jump(if: .zero, to: scanned)
        a.add(.rdi, 1)
        a.jump(to: scan)
        a.bind(scanned)
        a.mov(.rsi, release)
        a.mov(.rdx, .rdi)
        a.sub(.rdx, .rsi)
        a.call(writeString)
        a.mov(.rsi, newline.address)
        a.mov(.rdx, newline.length)
        a.call(writeString)

        // 3. n = sched_getaffinity(0, 128, mask) (bytes written, or -errno); rbx = the bits set.
        a.xor(.rbx, .rbx)
        a.mov(.rax, Linux.schedGetaffinity)
        a.mov(.rdi, 0)
        a.mov(.rsi, UInt64(maskBytes))
        a.mov(.rdx, mask)
        a.syscall()
        let counted = a.label(), nextByte = a.label(), bits = a.label(), byteLoop = a.label()
        a.test(.rax, .rax)
        a.jump(if: .sign, to: counted)             // failed: 0 CPUs, which fails the check
        a.mov(.rcx, .rax)                          // bytes left
        a.mov(.rsi, mask)
        a.bind(byteLoop)
        a.test(.rcx, .rcx)
        a.jump(if: .zero, to: counted)
        a.loadByte(.rax, base: .rsi)
        a.bind(bits)                               // rbx += popcount(al), a bit at a time
        a.test(.rax, .rax)
        a.jump(if: .zero, to: nextByte)
        a.mov(.rdx, .rax)
        a.and(.rdx, 1)
        a.add(.rbx, .rdx)
        a.shr(.rax, 1)
        a.jump(to: bits)
        a.bind(nextByte)
        a.add(.rsi, 1)
        a.sub(.rcx, 1)
        a.jump(to: byteLoop)
        a.bind(counted)

        //    "kite-init: PASS: N of N CPUs online" or "kite-init: FAIL: M of N CPUs online";
        //    rbp = the exit status for .exitForTesting.
        let failing = a.label(), reported = a.label()
        a.cmp(.rbx, Int32(expectedCPUs))
        a.jump(if: .notEqual, to: failing)
        a.mov(.rbp, 0)
        a.mov(.rsi, pass.address)
        a.mov(.rdx, pass.length)
        a.jump(to: reported)
        a.bind(failing)
        a.mov(.rbp, 1)
        a.mov(.rsi, fail.address)
        a.mov(.rdx, fail.length)
        a.bind(reported)
        a.call(writeString)
        a.mov(.rax, .rbx)
        a.call(printDecimal)
        a.mov(.rsi, ofExpected.address)
        a.mov(.rdx, ofExpected.length)
        a.call(writeString)

        // 4. Power off (or exit, for tests on the host).
        switch ending {
        case .powerOff:
            a.mov(.rax, Linux.reboot)
            a.mov(.rdi, Linux.rebootMagic1)
            a.mov(.rsi, Linux.rebootMagic2)
            a.mov(.rdx, Linux.rebootPowerOff)
            a.mov(.r10, 0)
            a.syscall()
            a.mov(.rsi, rebootFailed.address)
            a.mov(.rdx, rebootFailed.length)
            a.call(writeString)
            a.mov(.rbp, 1)
        case .exitForTesting:
            break
        }
        a.mov(.rax, Linux.exit)
        a.mov(.rdi, .rbp)
        a.syscall()

        // writeString: write(1, rsi, rdx). Clobbers rax, rdi, rcx, r11.
        a.bind(writeString)
        a.mov(.rax, Linux.write)
        a.mov(.rdi, 1)
        a.syscall()
        a.ret()

        // printDecimal: rax in decimal, digits built backwards from digitsEnd. Clobbers
        // rax, rcx, rdx, rsi, rdi, r11.
        a.bind(printDecimal)
        let nextDigit = a.label()
        a.mov(.rdi, digitsEnd)
        a.mov(.rcx, 10)
        a.bind(nextDigit)
        a.xor(.rdx, .rdx)
        a.div(.rcx)                                // rax = rax / 10, rdx = rax % 10
        a.add(.rdx, Int32(UInt8(ascii: "0")))
        a.sub(.rdi, 1)
        a.storeByte(.rdx, base: .rdi)
        a.test(.rax, .rax)
        a.jump(if: .notZero, to: nextDigit)
        a.mov(.rsi, .rdi)
        a.mov(.rdx, digitsEnd)
        a.sub(.rdx, .rdi)
        a.jump(to: writeString)                    // tail call

        return ELFWriter.executable(code: a.finish(), data: data.bytes, bssSize: data.bssSize)
    }

    /// The initramfs: /dev (console 5:1, mem 1:1) and /init.
    public static func initramfs(expectedCPUs: Int) -> [UInt8] {
        var cpio = CPIOWriter()
        cpio.add("dev", .directory)
        cpio.add("dev/console", .characterDevice(major: 5, minor: 1))
        cpio.add("dev/mem", .characterDevice(major: 1, minor: 1))
        cpio.add("init", .file(program(expectedCPUs: expectedCPUs), executable: true))
        return cpio.finish()
    }
}

/// The data segment being laid out: initialized bytes first, then zeroed (bss) reservations,
/// all at absolute addresses from `ELFWriter.dataAddress`.
struct DataLayout {
    private(set) var bytes: [UInt8] = []
    private(set) var bssSize = 0
    private var reservations: [(offset: Int, size: Int)] = []

    struct Text { let address: UInt64; let length: UInt64 }

    /// A string in the data; it must be added before any `reserve`.
    mutating func string(_ s: String) -> Text {
        precondition(bssSize == 0, "strings come before reservations")
        let address = ELFWriter.dataAddress + UInt64(bytes.count)
        let utf8 = Array(s.utf8)
        bytes += utf8
        return Text(address: address, length: UInt64(utf8.count))
    }

    /// `size` zeroed bytes, 8-aligned, after the initialized data.
    mutating func reserve(_ size: Int) -> UInt64 {
        while bytes.count % 8 != 0 { bytes.append(0) }
        let address = ELFWriter.dataAddress + UInt64(bytes.count + bssSize)
        bssSize += (size + 7) / 8 * 8
        return address
    }
}
