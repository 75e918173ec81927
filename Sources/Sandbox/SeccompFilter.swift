import CSandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `kite run --seccomp`: every Kite thread runs under its own allow-list (`on`, the
/// default); a call outside it is logged by the host kernel but allowed (`log`, for finding
/// what a list lacks: `dmesg | grep 'type=1326'`); or no filter at all (`off`).
public enum SeccompMode: String, CaseIterable, Sendable {
    case on, log, off
}

/// A system call a thread may make: any call (`arguments` empty), or only with argument
/// `argumentIndex` equal to one of `arguments` (ioctl request numbers, socket families).
public struct SyscallRule: Equatable, Sendable {
    public let name: String
    public let argumentIndex: UInt32
    public let arguments: [UInt64]

    public static func call(_ name: String) -> SyscallRule {
        SyscallRule(name: name, argumentIndex: 0, arguments: [])
    }
    public static func call(_ name: String, argument index: UInt32, in values: [UInt64]) -> SyscallRule {
        SyscallRule(name: name, argumentIndex: index, arguments: values)
    }
}

/// Why a filter could not be built or installed.
public struct SeccompError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// One thread kind's allow-list compiled to classic BPF by libseccomp: built once on the
/// main thread during setup, installed by each thread of that kind on itself.
public final class SeccompProgram: Sendable {
    public let role: ThreadRole
    /// The BPF instructions (struct sock_filter, 8 bytes each).
    let instructions: [UInt64]

    init(role: ThreadRole, instructions: [UInt64]) {
        self.role = role
        self.instructions = instructions
    }

    public var instructionCount: Int { instructions.count }

    /// Makes this the calling thread's filter (after PR_SET_NO_NEW_PRIVS). `label` names the
    /// thread in a violation report. Filters stack: a thread that installs a second filter
    /// is held to both.
    public func install(label: String) throws(SeccompError) {
        csandbox_set_thread_label(label)
        // Sound: the kernel copies the program during the call; the array outlives it.
        let rc = instructions.withUnsafeBytes { csandbox_apply($0.baseAddress, UInt(instructions.count)) }
        if rc < 0 { throw SeccompError("cannot install the \(role.rawValue) thread's seccomp filter: \(errnoText(-rc))") }
    }
}

/// The filters of every thread kind, for one mode.
public struct SeccompFilters: Sendable {
    private let programs: [ThreadRole: SeccompProgram]

    /// Compiles each role's allow-list (nil when `mode` is off). In `on` mode a call outside
    /// the list raises SIGSYS (see `SeccompViolation`); any other architecture's system call
    /// ABI (x32, i386) kills the process.
    public static func compile(_ mode: SeccompMode, lists: (ThreadRole) -> [SyscallRule] = ThreadAllowLists.rules)
        throws(SeccompError) -> SeccompFilters?
    {
        guard mode != .off else { return nil }
        var programs: [ThreadRole: SeccompProgram] = [:]
        for role in ThreadRole.allCases {
            programs[role] = try compile(role: role, rules: lists(role), defaultAction: mode == .on ? SCMP_ACT_TRAP : SCMP_ACT_LOG)
        }
        return SeccompFilters(programs: programs)
    }

    public func program(for role: ThreadRole) -> SeccompProgram { programs[role]! }

    static func compile(role: ThreadRole, rules: [SyscallRule], defaultAction: UInt32) throws(SeccompError) -> SeccompProgram {
        guard let ctx = seccomp_init(defaultAction) else { throw SeccompError("seccomp_init failed") }
        defer { seccomp_release(ctx) }
        // Kite sets NO_NEW_PRIVS itself when it installs the program.
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)
        for rule in rules {
            let number = seccomp_syscall_resolve_name(rule.name)
            guard number >= 0 else { throw SeccompError("the \(role.rawValue) allow-list names an unknown system call '\(rule.name)'") }
            if rule.arguments.isEmpty {
                let rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 0, nil)
                guard rc == 0 else { throw SeccompError("seccomp rule for \(rule.name): \(errnoText(-rc))") }
            }
            for value in rule.arguments {
                var compare = scmp_arg_cmp(arg: rule.argumentIndex, op: SCMP_CMP_EQ, datum_a: value, datum_b: 0)
                let rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 1, &compare)
                guard rc == 0 else { throw SeccompError("seccomp rule for \(rule.name)(\(value)): \(errnoText(-rc))") }
            }
        }
        var raw: UnsafeMutableRawPointer?
        let count = csandbox_export(ctx, &raw)
        guard count > 0, let raw else { throw SeccompError("cannot compile the \(role.rawValue) seccomp filter: \(errnoText(Int32(-count)))") }
        defer { free(raw) }
        // Sound: csandbox_export returned `count` 8-byte instructions at `raw`.
        let instructions = Array(UnsafeBufferPointer(start: raw.assumingMemoryBound(to: UInt64.self), count: count))
        return SeccompProgram(role: role, instructions: instructions)
    }
}

/// A system call a filter refused (in `on` mode): the first one, by thread and call.
public struct SeccompViolation: Equatable, Sendable {
    /// The thread's label (`kite-vcpu3`, `kite-devices`, `kite` for the main thread).
    public let thread: String
    public let syscall: Int
    /// Every refused call so far, the first included.
    public let count: Int

    /// Installs the SIGSYS handler (once, before any filter): it records the call, makes it
    /// fail with EPERM, and writes `wakeFD` (an eventfd) so the main thread stops the machine.
    public static func catchViolations(wakeFD: Int32) throws(SeccompError) {
        let rc = csandbox_install_violation_handler(wakeFD)
        if rc < 0 { throw SeccompError("cannot install the SIGSYS handler: \(errnoText(-rc))") }
    }

    /// The first violation so far, if any.
    public static var first: SeccompViolation? {
        var label = [CChar](repeating: 0, count: 16)
        var count: UInt = 0
        let nr = csandbox_violation(&label, &count)
        guard nr >= 0 else { return nil }
        let name = String(decoding: label.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return SeccompViolation(thread: name, syscall: nr, count: Int(count))
    }

    /// The system call's name on this architecture ("getppid"), or its number.
    public var syscallName: String {
        guard let name = seccomp_syscall_resolve_num_arch(seccomp_arch_native(), Int32(syscall)) else { return "#\(syscall)" }
        defer { free(name) }
        return String(cString: name)
    }

    /// One line for the user.
    public var sentence: String {
        "seccomp: thread \(thread) made system call \(syscallName) (\(syscall)), which its allow-list does not permit"
            + (count > 1 ? " (\(count) refused calls in all)" : "")
    }
}

/// Drops every capability of the calling thread (threads it starts afterwards inherit none).
public func dropCapabilities() throws(SeccompError) {
    let rc = csandbox_drop_capabilities()
    if rc < 0 { throw SeccompError("cannot drop capabilities: \(errnoText(-rc))") }
}

/// Calls getppid(2), which no allow-list permits (`--inject seccomp-violation=...`).
public func makeForbiddenSystemCall() -> Int { csandbox_forbidden_call() }

func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

/// `kite run --inject seccomp-violation=ROLE` (tests only): the first thread of that kind
/// makes a system call outside its allow-list once it is confined, to show that the
/// violation is caught, named and ends the machine in order.
public enum ForbiddenCallInjection {
    private static let armedRole = Mutex<ThreadRole?>(nil)

    public static func arm(_ role: ThreadRole) { armedRole.withLock { $0 = role } }

    /// Called by each thread once confined: makes the forbidden call if `role` is armed
    /// (once: the first thread of the kind disarms it).
    public static func fireIfArmed(_ role: ThreadRole) {
        let fire = armedRole.withLock { armed -> Bool in
            guard armed == role else { return false }
            armed = nil
            return true
        }
        if fire { _ = makeForbiddenSystemCall() }
    }
}
