import CSeccompCompiler
import SeccompAllowLists
#if canImport(Glibc)
import Glibc
#endif

/// Compiles the allow-lists to classic BPF with libseccomp. Runs at build time (the
/// SeccompBPF plugin's kite-seccomp-bpf tool) and in the tests, never in `kite` itself:
/// compiling the six lists took about 1 ms of every start.
public enum SeccompCompiler {
    /// What a filter does with a call its list does not allow.
    public enum DefaultAction: CaseIterable, Sendable {
        /// SIGSYS (`--seccomp on`): Kite's handler records the call and stops the machine.
        case trap
        /// Logged by the host kernel and allowed (`--seccomp log`).
        case log

        var libseccompAction: UInt32 { self == .trap ? SCMP_ACT_TRAP : SCMP_ACT_LOG }
    }

    public struct CompileError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// One role's program: BPF instructions (struct sock_filter, 8 bytes each, in host byte
    /// order). Any other architecture's system call ABI (x32, i386) kills the process.
    public static func compile(rules: [SyscallRule], defaultAction: DefaultAction, role: String) throws(CompileError) -> [UInt64] {
        guard let ctx = seccomp_init(defaultAction.libseccompAction) else { throw CompileError(description: "seccomp_init failed") }
        defer { seccomp_release(ctx) }
        // Kite sets NO_NEW_PRIVS itself when it installs the program.
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)
        for rule in rules {
            let number = seccomp_syscall_resolve_name(rule.name)
            guard number >= 0 else { throw CompileError(description: "the \(role) allow-list names an unknown system call '\(rule.name)'") }
            if rule.arguments.isEmpty {
                let rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 0, nil)
                guard rc == 0 else { throw CompileError(description: "seccomp rule for \(rule.name): \(errnoText(-rc))") }
            }
            for value in rule.arguments {
                var compare = scmp_arg_cmp(arg: rule.argumentIndex, op: SCMP_CMP_EQ, datum_a: value, datum_b: 0)
                let rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 1, &compare)
                guard rc == 0 else { throw CompileError(description: "seccomp rule for \(rule.name)(\(value)): \(errnoText(-rc))") }
            }
        }
        var raw: UnsafeMutableRawPointer?
        let count = kite_seccomp_export(ctx, &raw)
        guard count > 0, let raw else { throw CompileError(description: "cannot compile the \(role) seccomp filter: \(errnoText(Int32(-count)))") }
        defer { free(raw) }
        // Sound: kite_seccomp_export returned `count` 8-byte instructions at `raw`.
        return Array(UnsafeBufferPointer(start: raw.assumingMemoryBound(to: UInt64.self), count: count))
    }

    /// Every role's program for `defaultAction`, from Kite's own lists.
    public static func compileAll(_ defaultAction: DefaultAction) throws(CompileError) -> [ThreadRole: [UInt64]] {
        var programs: [ThreadRole: [UInt64]] = [:]
        for role in ThreadRole.allCases {
            programs[role] = try compile(rules: ThreadAllowLists.rules(for: role), defaultAction: defaultAction, role: role.rawValue)
        }
        return programs
    }

    /// The names of this architecture's system calls by number (nil where none), so that a
    /// violation can be named without libseccomp at run time.
    public static func syscallNames(upTo limit: Int32 = 512) -> [String?] {
        (0 ..< limit).map { number in
            guard let name = seccomp_syscall_resolve_num_arch(seccomp_arch_native(), number) else { return nil }
            defer { free(name) }
            return String(cString: name)
        }
    }

    static func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }
}
