import CommandLineParsing
import BootMatrix
import VMM
#if canImport(Glibc)
import Glibc
#endif

struct BootTestCommand {
    static let spec = CommandSpec(
        name: "boot-test",
        abstract: "Boot a kernel in every combination of vCPU counts and interrupt controllers, and tabulate the results.",
        discussion: """
        Every combination of --cpus and --irqchip (each --repeat times) runs as its own `kite run` (this same binary), with the hang watchdog armed (--hang-timeout, --report) and --boot-timing, at most --jobs at a time. Each run's files are in the results directory: NAME.console.log (the guest's console), NAME.kite.log (kite's stdout and stderr), NAME.report.json (the hang watchdog's report, when it made one); NAME is e.g. cpus4-kernel (cpus4-kernel-run2 with --repeat).

        Without --initrd, Kite supplies its own initramfs (initramfs-cpusN.cpio in the results directory): a static /init that Kite generates (no busybox), which marks the boot timer, prints "kite-init: Linux <release>", counts the online CPUs (sched_getaffinity), prints "kite-init: PASS: N of N CPUs online" or "kite-init: FAIL: M of N CPUs online" (it is built for the configuration's vCPU count), and powers off. A kernel image is all you need.

        Results: passed (the guest powered off; with the built-in init, after its PASS line; and the guest printed no lockup, RCU stall, hung task or panic report); failed (the init's FAIL line, or such a report on the way); hung (kite's hang watchdog found the guest stuck, exit status 5: the diagnosis is its report's summary); crashed (triple fault, failed entry, KVM internal error); timed out (no exit within --timeout: SIGTERM, then SIGKILL 15 s later); failed to boot (kite refused the setup, the guest rebooted, e.g. after a panic with panic=-1, or powered off without the init's line); kite error (kite failed, exit status 1); not run (boot-test was interrupted).

        "userspace" is the time to userspace: ms from kite's start to the built-in init's first action, its write of 123 to the boot timer at guest physical 0xc0000000 (--boot-timing's init marker). With your own --initrd it is shown only if your init writes that marker (e.g. `devmem 0xc0000000 8 123`).

        Exit status: 0 when every run passed; 1 when any did not; 2 bad usage; 130/143 interrupted by SIGINT/SIGTERM (running kites are stopped with SIGTERM first, and the table shows what finished).
        """,
        options: [
            .single("kernel", "path", help: "Kernel image (bzImage or ELF vmlinux with PVH).", required: true),
            .single("initrd", "path",
                    help: "Your own initramfs (default: Kite's built-in one; see below). Its guest passes when it powers off."),
            .single("cpus", "n,n,...", help: "vCPU counts to boot, comma-separated.", default: "1,2,4"),
            .single("irqchip", "kernel,split,userspace",
                    help: "Interrupt controller modes to boot each count with, comma-separated (see kite run --help).",
                    default: "kernel"),
            .single("repeat", "n", help: "Runs of each combination.", default: "1"),
            .single("timeout", "seconds", help: "Seconds a run may take before it is stopped and counted as timed out.",
                    default: "120"),
            .single("hang-timeout", "seconds", help: "Each run's kite --hang-timeout (default: half of --timeout)."),
            .single("memory", "size", help: "Guest RAM for each run.", default: "512M"),
            .single("cmdline", "string", help: "Kernel command line for each run.", default: "console=ttyS0 panic=-1"),
            .repeated("inject", "fault",
                      help: "TESTING ONLY: pass this --inject to every run (see kite run --help), e.g. stall-vcpu=2@30s (repeatable)."),
            .single("jobs", "n",
                    help: "Runs at a time (default: the host's online CPUs divided by the largest --cpus, at least 1)."),
            .single("output", "dir",
                    help: "Results directory, created if missing (default: a new kite-boot-test.XXXXXX in $TMPDIR, or /tmp)."),
            .single("junit", "path", help: "Also write the results as JUnit XML (one testcase per run)."),
            .single("json", "path", help: "Also write the results as JSON."),
        ]
    )

    let kernel: String
    let initrd: String?
    let cpus: String
    let irqchip: String
    let repeatCount: Int
    let timeout: Int
    let hangTimeout: Int?
    let memory: String
    let cmdline: String
    let inject: [String]
    let jobs: Int?
    let output: String?
    let junit: String?
    let json: String?

    init(_ options: ParsedOptions) throws {
        kernel = options.value("kernel") ?? ""
        initrd = options.value("initrd")
        cpus = options.value("cpus") ?? "1,2,4"
        irqchip = options.value("irqchip") ?? "kernel"
        repeatCount = try options.int("repeat", default: 1)
        timeout = try options.int("timeout", default: 120)
        hangTimeout = try options.int("hang-timeout")
        memory = options.value("memory") ?? "512M"
        cmdline = options.value("cmdline") ?? "console=ttyS0 panic=-1"
        inject = options.values("inject")
        jobs = try options.int("jobs")
        output = options.value("output")
        junit = options.value("junit")
        json = options.value("json")
        try validate()
    }

    func validate() throws {
        for (name, path) in [("--kernel", kernel), ("--initrd", initrd)] {
            if let path, access(path, R_OK) != 0 {
                throw UsageError("\(name) \(path): \(String(cString: strerror(errno)))")
            }
        }
        let counts: [Int], modes: [InterruptControllerMode]
        do {
            counts = try BootTestArguments.cpuList(cpus)
            modes = try BootTestArguments.irqchipList(irqchip)
            try BootTestArguments.check(cpus: counts, irqchips: modes)
        } catch { throw UsageError(error.message) }
        guard repeatCount >= 1 else { throw UsageError("--repeat must be at least 1 (got \(repeatCount))") }
        guard timeout >= 1 else { throw UsageError("--timeout must be a positive number of seconds") }
        if let h = hangTimeout, h < 1 || h >= timeout {
            throw UsageError("--hang-timeout must be at least 1 and less than --timeout (\(timeout) s)")
        }
        if let j = jobs, j < 1 { throw UsageError("--jobs must be at least 1 (got \(j))") }
        guard MemorySize.parse(memory) != nil else {
            throw UsageError("--memory '\(memory)' is not a size: use 512M, 2G or a number of MiB")
        }
        for fault in inject {
            let parsed: FaultInjection
            do { parsed = try FaultInjection.parse(fault) } catch { throw UsageError("--inject: \(error)") }
            if case .stallVCPU(let vcpu, _) = parsed, let fewest = counts.min(), vcpu >= fewest {
                throw UsageError("--inject \(fault): vCPU \(vcpu) does not exist in a \(fewest)-vCPU run (--cpus \(cpus))")
            }
        }
        if let output { try checkWritableDirectory(output, option: "--output") }
        for (name, path) in [("--junit", junit), ("--json", json)] {
            guard let path else { continue }
            if access(path, F_OK) == 0 {
                guard access(path, W_OK) == 0 else { throw UsageError("\(name) \(path): \(String(cString: strerror(errno)))") }
            } else {
                let parent = directory(of: path)
                guard access(parent, W_OK) == 0 else {
                    throw UsageError("\(name) \(path): cannot create it in \(parent): \(String(cString: strerror(errno)))")
                }
            }
        }
    }

    /// An existing directory we may write, or a missing one whose parent we may write.
    private func checkWritableDirectory(_ path: String, option: String) throws {
        var st = stat()
        if stat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else { throw UsageError("\(option) \(path) is not a directory") }
            guard access(path, W_OK | X_OK) == 0 else {
                throw UsageError("\(option) \(path): \(String(cString: strerror(errno)))")
            }
        } else {
            let parent = directory(of: path)
            guard access(parent, W_OK | X_OK) == 0 else {
                throw UsageError("\(option) \(path): cannot create it in \(parent): \(String(cString: strerror(errno)))")
            }
        }
    }

    private func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    func run() throws {
        let counts = try BootTestArguments.cpuList(cpus)
        let modes = try BootTestArguments.irqchipList(irqchip)
        let configurations = BootConfiguration.matrix(cpus: counts, irqchips: modes, repeatCount: repeatCount)
        let hostCPUs = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let directory: String
        do { directory = try makeOutputDirectory() } catch {
            printError("kite: \(error)")
            throw ExitCode(ExitStatus.usage)
        }
        let plan = BootTestPlan(kernel: kernel, initrd: initrd, configurations: configurations, memory: memory,
                                cmdline: cmdline, timeoutSeconds: timeout, hangTimeoutSeconds: hangTimeout ?? max(1, timeout / 2),
                                injections: inject, jobs: jobs ?? BootTestArguments.defaultJobs(hostCPUs: hostCPUs, cpus: counts),
                                outputDirectory: directory)
        let runner = BootTestRunner(plan: plan)
        runner.onFinish = { record, done, total in
            printError("kite boot-test: [\(done)/\(total)] \(record.configuration.name): \(record.result.rawValue)"
                       + (record.exit == nil ? "" : " (\(String(format1(record.seconds))) s)"))
        }
        printError("kite boot-test: \(configurations.count) run\(configurations.count == 1 ? "" : "s"), \(plan.jobs) at a time; results in \(directory)")
        let started = monotonicSeconds()
        let records: [RunRecord]
        do {
            try runner.prepare()
            records = try runner.run()
        } catch {
            printError("kite: \(error)")
            throw ExitCode(ExitStatus.vmmError)
        }
        let summary = BootTestSummary(kernel: kernel, initrd: initrd, outputDirectory: directory, records: records,
                                      seconds: monotonicSeconds() - started, timestamp: utcTimestamp(), hostname: hostName())
        print(BootTestOutput.table(summary), terminator: "")
        do {
            if let json { try writeFile(json, Array(BootTestOutput.json(summary).utf8)) }
            if let junit { try writeFile(junit, Array(BootTestOutput.junit(summary).utf8)) }
        } catch {
            printError("kite: \(error)")
            throw ExitCode(ExitStatus.vmmError)
        }
        if let signal = runner.interruptedBy { throw ExitCode(128 + signal) }
        throw ExitCode(summary.allPassed ? 0 : 1)
    }

    private func makeOutputDirectory() throws -> String {
        if let output {
            if mkdir(output, 0o755) != 0 && errno != EEXIST {
                throw UsageError("--output \(output): \(String(cString: strerror(errno)))")
            }
            return output
        }
        let base = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array((base + "/kite-boot-test.XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw UsageError("cannot create a results directory in \(base): \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
    }
}

private func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

private func format1(_ v: Double) -> String {
    let tenths = Int((v * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}
