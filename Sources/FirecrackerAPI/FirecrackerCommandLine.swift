/// Firecracker's command line (its `main.rs` and `arg_parser.rs`), as `kite firecracker` and a
/// `kite` started through a link named `firecracker` read it: every option as `--name value`
/// or `--name`, no `--name=value`, no repeats; what follows a bare `--` is ignored.
public struct FirecrackerCommandLine: Equatable, Sendable {
    public var apiSocket = "/run/firecracker.socket"
    public var instanceID = "anonymous-instance"
    public var configFile: String?
    public var noAPI = false
    public var noSeccomp = false
    public var bootTimer = false
    public var logPath: String?
    public var level: String?
    public var showLevel = false
    public var showLogOrigin = false
    public var module: String?
    public var metricsPath: String?
    public var maxPayloadBytes = 51200
    public var showVersion = false
    public var showHelp = false

    /// Firecracker's exit status for a command line it cannot read (`FcExitCode::ArgParsing`).
    public static let argumentErrorStatus: Int32 = 153
    /// Its status for a configuration it refuses (`FcExitCode::BadConfiguration`).
    public static let badConfigurationStatus: Int32 = 152

    public init() {}

    /// What takes a value, and what is a flag.
    static let valued: Set<String> = [
        "api-sock", "id", "config-file", "seccomp-filter", "start-time-us", "start-time-cpu-us", "parent-cpu-time-us",
        "metadata", "log-path", "level", "module", "metrics-path", "describe-snapshot", "http-api-max-payload-size",
        "mmds-size-limit",
    ]
    static let flags: Set<String> = [
        "no-api", "no-seccomp", "show-level", "show-log-origin", "boot-timer", "version", "help", "snapshot-version",
    ]

    public static func parse(_ arguments: [String]) throws(SchemaError) -> FirecrackerCommandLine {
        var line = FirecrackerCommandLine()
        // --version answers whatever else is there, as in Firecracker.
        if arguments.prefix(while: { $0 != "--" }).contains("--version") { line.showVersion = true; return line }
        var seen = Set<String>()
        var values: [String: String] = [:]
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            if arg == "--" { break }
            if arg == "-h" { line.showHelp = true; continue }
            guard arg.hasPrefix("--") else {
                throw SchemaError("Found argument '\(arg)' which wasn't expected, or isn't valid in this context.")
            }
            let name = String(arg.dropFirst(2))
            guard valued.contains(name) || flags.contains(name) else {
                throw SchemaError("Found argument '\(arg)' which wasn't expected, or isn't valid in this context.")
            }
            guard seen.insert(name).inserted else { throw SchemaError("The argument '\(arg)' was provided more than once.") }
            if valued.contains(name) {
                guard i < arguments.count, !arguments[i].hasPrefix("--") else {
                    throw SchemaError("The argument '\(arg)' requires a value, but none was supplied.")
                }
                values[name] = arguments[i]
                i += 1
            }
        }
        if seen.contains("version") { line.showVersion = true; return line }
        if seen.contains("help") { line.showHelp = true }
        if line.showHelp { return line }
        if let v = values["api-sock"] { line.apiSocket = v }
        if let v = values["id"] {
            guard (1...64).contains(v.count), v.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
                throw SchemaError("Invalid instance ID: '\(v)' (1 to 64 letters, digits or '-')")
            }
            line.instanceID = v
        }
        line.configFile = values["config-file"]
        line.noAPI = seen.contains("no-api")
        if line.noAPI && line.configFile == nil {
            throw SchemaError("Missing argument: config-file. Arguments required by 'no-api' need to be provided.")
        }
        line.noSeccomp = seen.contains("no-seccomp")
        if values["seccomp-filter"] != nil {
            if line.noSeccomp { throw SchemaError("Arguments 'no-seccomp' and 'seccomp-filter' cannot be used together.") }
            throw SchemaError("--seccomp-filter: Kite installs its own allow-list on each of its threads; leave this out (or pass --no-seccomp)")
        }
        if values["metadata"] != nil { throw SchemaError("--metadata: Kite has no MMDS (the microVM metadata service)") }
        if values["describe-snapshot"] != nil || seen.contains("snapshot-version") {
            throw SchemaError("Kite has no snapshots")
        }
        for name in ["start-time-us", "start-time-cpu-us", "parent-cpu-time-us", "http-api-max-payload-size", "mmds-size-limit"] {
            guard let v = values[name] else { continue }
            guard let n = UInt64(v) else { throw SchemaError("Invalid value for --\(name): '\(v)' is not a non-negative integer") }
            if name == "http-api-max-payload-size" {
                guard n >= 1, n <= 64 << 20 else { throw SchemaError("--http-api-max-payload-size must be 1 to \(64 << 20) bytes") }
                line.maxPayloadBytes = Int(n)
            }
        }
        line.bootTimer = seen.contains("boot-timer")
        line.logPath = values["log-path"]
        line.level = values["level"]
        line.module = values["module"]
        line.showLevel = seen.contains("show-level")
        line.showLogOrigin = seen.contains("show-log-origin")
        line.metricsPath = values["metrics-path"]
        return line
    }

    /// Firecracker checks the log level after the command line, with its own exit status (152).
    public func checkLevel() throws(SchemaError) {
        if let level, !LoggerSettings.levels.contains(level.lowercased()) {
            throw SchemaError("Invalid level: \(level). Valid levels: Error, Warning, Info, Debug, Trace, Off")
        }
    }

    /// `--version`: Firecracker's first line (Kata reads the second word as the version and
    /// wants at least 0.21.1), then what is really answering.
    public static let versionText = "Firecracker v\(FirecrackerVMM.apiVersion)\n\nKite, speaking Firecracker v\(FirecrackerVMM.apiVersion)'s API and command line (kite firecracker --help)\n"

    public static let helpText = """
    kite firecracker: Kite with Firecracker's command line and API (v\(FirecrackerVMM.apiVersion)).
    It also runs this way when started through a link named `firecracker`.

    Usage: kite firecracker [--api-sock PATH] [--config-file FILE] [--no-api] [--id ID] [OPTIONS]

      --api-sock PATH           the API's Unix socket (default /run/firecracker.socket; it must not exist)
      --config-file FILE        configure from this JSON file (Firecracker's schema) and boot at once
      --no-api                  serve no API (needs --config-file)
      --id ID                   the instance id GET / reports (1-64 letters, digits, '-')
      --no-seccomp              do not confine Kite's threads (Kite's own per-thread allow-lists otherwise)
      --boot-timer              print when the guest wrote 123 to the boot timer (Kite's at 0xc0000000)
      --log-path PATH           Kite's log lines go here (a file or a FIFO) instead of stderr
      --level LEVEL             Error, Warning, Info, Debug, Trace or Off
      --show-level, --show-log-origin, --module M
                                accepted; Kite's log lines are one sentence each
      --metrics-path PATH       FlushMetrics writes one JSON line here
      --http-api-max-payload-size N
                                the largest request body (default 51200 bytes)
      --start-time-us N, --start-time-cpu-us N, --parent-cpu-time-us N, --mmds-size-limit N
                                accepted and ignored
      --version                 print the Firecracker version Kite speaks
      -h, --help                this text

    Refused: --seccomp-filter (Kite's filters are its own), --metadata (no MMDS), snapshots.
    The API: Docs/Firecracker-API.md. Kite's hang report of the running VM: GET /kite/hang-report
    (?format=json), or `kite inspect PATH.kite` on the control socket next to the API socket.
    Exit status, as Firecracker's: 0 when the guest powers off or reboots, 153 for a bad command line,
    152 for a bad --level, 1 for a bad config file or an API socket path already taken; otherwise
    as `kite run` (kite run --help: 4 crash, 143 SIGTERM, ...).

    """
}
