import CSandbox
import SeccompAllowLists
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

/// Why a filter could not be built or installed.
public struct SeccompError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// One thread kind's allow-list as classic BPF, compiled by libseccomp when Kite was built
/// (the SeccompBPF plugin), installed by each thread of that kind on itself.
public final class SeccompProgram: Sendable {
    public let role: ThreadRole
    /// The BPF instructions (struct sock_filter, 8 bytes each).
    public let instructions: [UInt64]

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

    /// Each role's program for `mode` (nil when `mode` is off), compiled at build time. In
    /// `on` mode a call outside the list raises SIGSYS (see `SeccompViolation`); in `log`
    /// mode the host kernel logs it and lets it through; any other architecture's system
    /// call ABI (x32, i386) kills the process.
    public static func compiled(_ mode: SeccompMode) -> SeccompFilters? {
        let table: [ThreadRole: [UInt64]]
        switch mode {
        case .off: return nil
        case .on: table = CompiledAllowLists.trap
        case .log: table = CompiledAllowLists.log
        }
        var programs: [ThreadRole: SeccompProgram] = [:]
        for (role, instructions) in table { programs[role] = SeccompProgram(role: role, instructions: instructions) }
        return SeccompFilters(programs: programs)
    }

    public func program(for role: ThreadRole) -> SeccompProgram { programs[role]! }
}

/// A system call a filter refused (in `on` mode): the first one, by thread and call.
public struct SeccompViolation: Equatable, Sendable {
    /// The thread's label (`kite-vcpu3`, `kite-devices`, `kite` for the main thread).
    public let thread: String
    public let syscall: Int
    /// Every refused call so far, the first included.
    public let count: Int

    public init(thread: String, syscall: Int, count: Int) {
        self.thread = thread
        self.syscall = syscall
        self.count = count
    }

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
        let names = CompiledAllowLists.syscallNames
        guard names.indices.contains(syscall), let name = names[syscall] else { return "#\(syscall)" }
        return name.description
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
