import JSON
import Synchronization
import VirtioDevices
#if canImport(Glibc)
import Glibc
#endif

/// What the API has configured so far: Firecracker's `VmResources`.
public struct VMResources: Sendable {
    public var bootSource: BootSource?
    public var machine = MachineConfiguration()
    /// In the order the guest sees them, the root device first (Firecracker's `BlockBuilder`).
    public var drives: [Drive] = []
    public var networkInterfaces: [NetworkInterface] = []
    public var vsock: Vsock?
    public var entropy = false
    public var logger: LoggerSettings?
    public var metricsPath: String?

    public init() {}

    /// Firecracker's kernel command line when `boot_args` is absent (`DEFAULT_KERNEL_CMDLINE`).
    public static let defaultBootArgs = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"

    /// The command line the guest gets: the boot args, then the root device if a drive is
    /// one (`root=/dev/vda` or `root=PARTUUID=...`, `ro` or `rw`), as Firecracker appends.
    public var kernelCommandLine: String {
        var line = bootSource?.bootArgs ?? Self.defaultBootArgs
        if let root = drives.first(where: \.isRootDevice) {
            line += root.partUUID.map { " root=PARTUUID=\($0)" } ?? " root=/dev/vda"
            line += root.isReadOnly ? " ro" : " rw"
        }
        return line
    }

    var vmConfigJSON: JSONValue {
        .object([
            ("balloon", .null),
            ("drives", .array(drives.map(\.json))),
            ("boot-source", bootSource?.json ?? .object([("kernel_image_path", .string("")), ("initrd_path", .null), ("boot_args", .null)])),
            ("cpu-config", .null),
            ("logger", .optional(logger, \.json)),
            ("machine-config", machine.json),
            ("metrics", .optional(metricsPath) { .object([("metrics_path", .string($0))]) }),
            ("mmds-config", .null),
            ("network-interfaces", .array(networkInterfaces.map(\.json))),
            ("vsock", .optional(vsock, \.json)),
            ("entropy", entropy ? .object([("rate_limiter", .null)]) : .null),
        ])
    }

    mutating func insert(_ drive: Drive) throws(SchemaError) {
        if drive.isRootDevice, drives.contains(where: { $0.isRootDevice && $0.driveID != drive.driveID }) {
            throw SchemaError("A root block device already exists!")
        }
        try Self.checkOpenable(drive.pathOnHost, writable: !drive.isReadOnly, what: "Unable to open the block device backing file")
        // A drive PUT again keeps its place, unless it becomes (or stops being) the root one.
        if let i = drives.firstIndex(where: { $0.driveID == drive.driveID }), drives[i].isRootDevice == drive.isRootDevice {
            drives[i] = drive
            return
        }
        drives.removeAll { $0.driveID == drive.driveID }
        if drive.isRootDevice { drives.insert(drive, at: 0) } else { drives.append(drive) }
    }

    mutating func insert(_ net: NetworkInterface) throws(SchemaError) {
        let others = networkInterfaces.filter { $0.ifaceID != net.ifaceID }
        if others.contains(where: { $0.hostDevName == net.hostDevName }) {
            throw SchemaError("The host device name \(net.hostDevName) is already in use.")
        }
        if let mac = net.guestMAC {
            guard let parsed = MACAddress(mac) else { throw SchemaError(serde: "invalid MAC address `\(mac)`") }
            guard !parsed.isMulticast, !parsed.isZero else { throw SchemaError("The MAC address \(mac) is not a unicast address.") }
            if others.contains(where: { $0.guestMAC.flatMap(MACAddress.init) == parsed }) {
                throw SchemaError("The MAC address is already in use: \(mac).")
            }
        }
        guard !net.hostDevName.isEmpty, net.hostDevName.utf8.count <= NetworkDeviceConfig.maxTapNameLength else {
            throw SchemaError("Could not create the network device: the host device name must be 1 to \(NetworkDeviceConfig.maxTapNameLength) bytes")
        }
        if let i = networkInterfaces.firstIndex(where: { $0.ifaceID == net.ifaceID }) { networkInterfaces[i] = net }
        else { networkInterfaces.append(net) }
    }

    /// Firecracker opens files when they are configured, so a bad path is the PUT's error.
    static func checkOpenable(_ path: String, writable: Bool, what: String) throws(SchemaError) {
        let fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        if fd < 0 { throw SchemaError("\(what) (\(path)): \(String(cString: strerror(errno)))") }
        close(fd)
    }
}

/// What the VMM behind the API does. Each returns nil when done, or the fault message.
public protocol FirecrackerBackend: AnyObject, Sendable {
    /// Builds the machine from `resources` and starts its vCPUs.
    func start(_ resources: VMResources) -> String?
    func pause() -> String?
    func resume() -> String?
    func sendCtrlAltDel() -> String?
    /// Swaps the backing file of the drive at `index` (the guest's order).
    func updateDrive(index: Int, path: String) -> String?
    /// The machine's counters for Firecracker's metrics, totals since it started, by group
    /// (`block`, `net`, `seccomp`, ...): empty before the machine exists.
    func machineMetrics() -> [(group: String, counters: [(name: String, value: Int)])]
    /// Appends `line` (one JSON object and a newline) to the metrics file, if one is set.
    func writeMetrics(_ line: String) -> String?
    /// Kite's hang report of the running VM, or nil with the reason in `error`.
    func hangReport(json: Bool) -> Result<String, HangReportUnavailable>
}

public struct HangReportUnavailable: Error, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// Firecracker's API over Kite: the instance's state, its resources before start, and every
/// request's answer (Firecracker's `rpc_interface.rs`: what is allowed before and after
/// InstanceStart, and the exact refusals). One request at a time, as Firecracker does.
public final class FirecrackerVMM: Sendable {
    public enum State: String, Sendable {
        case notStarted = "Not started"
        case running = "Running"
        case paused = "Paused"
    }

    /// The Firecracker release whose API Kite speaks (the one Kata Containers pins).
    public static let apiVersion = "1.12.1"

    public let instanceID: String
    private let backend: any FirecrackerBackend
    private struct Inner {
        var state: State = .notStarted
        var resources = VMResources()
        /// API requests answered, as Firecracker's metrics name them ("put_api_requests" ->
        /// "drive_count" and "drive_fails"), since the start.
        var requestCounts: [String: [String: Int]] = [:]
        /// Every counter's total at the last flush: a flush reports what happened since.
        var flushed: [String: Int] = [:]
    }
    private let inner = Mutex(Inner())

    public init(instanceID: String, backend: any FirecrackerBackend) {
        self.instanceID = instanceID
        self.backend = backend
    }

    public var state: State { inner.withLock { $0.state } }
    public var resources: VMResources { inner.withLock { $0.resources } }

    static let notBeforeStart = "The requested operation is not supported before starting the microVM."
    static let notAfterStart = "The requested operation is not supported after starting the microVM."

    /// Answers one HTTP request, and counts it (a request whose body is refused too, as
    /// Firecracker counts it).
    public func respond(to request: HTTPRequest) -> HTTPResponse {
        let response: HTTPResponse
        do { response = handle(try APIRequest.parse(request)) } catch { response = .fault(error.description) }
        if let (group, name) = Self.metricName(method: request.method, path: request.path) {
            let ok = response.status < 300
            inner.withLock { s in
                s.requestCounts[group, default: [:]][name + "_count", default: 0] += 1
                if !ok { s.requestCounts[group, default: [:]][name + "_fails", default: 0] += 1 }
            }
        }
        return response
    }

    /// Firecracker's metric group and name for a request's route (its `*_api_requests`
    /// counters); nil for routes it does not count.
    static func metricName(method: String, path: String) -> (String, String)? {
        let resource = path.split(separator: "/").first.map(String.init) ?? ""
        let group = ["GET": "get_api_requests", "PUT": "put_api_requests", "PATCH": "patch_api_requests"][method]
        let names: [String: String] = [
            "GET ": "instance_info", "GET version": "vmm_version", "GET machine-config": "machine_cfg", "GET vm": "vm_config",
            "PUT machine-config": "machine_cfg", "PATCH machine-config": "machine_cfg", "PUT boot-source": "boot_source",
            "PUT drives": "drive", "PATCH drives": "drive", "PUT network-interfaces": "network",
            "PATCH network-interfaces": "network", "PUT vsock": "vsock", "PUT entropy": "entropy", "PUT logger": "logger",
            "PUT metrics": "metrics", "PUT actions": "actions", "PATCH vm": "vm",
        ]
        guard let group, let name = names[method + " " + resource] else { return nil }
        return (group, name)
    }

    /// One line of Firecracker's metrics: its time stamp, then each counter's change since
    /// the last flush (as Firecracker's counters reset when written), the API's and the
    /// machine's, by group.
    func metricsLine(utcMilliseconds: Int) -> String {
        let machine = backend.machineMetrics()
        return inner.withLock { s in
            var groups: [(String, [(String, Int)])] = s.requestCounts.keys.sorted().map { group in
                (group, s.requestCounts[group]!.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
            }
            groups += machine.map { ($0.group, $0.counters.map { ($0.name, $0.value) }) }
            var members: [(key: String, value: JSONValue)] = [("utc_timestamp_ms", .integer(utcMilliseconds))]
            for (group, counters) in groups {
                members.append((group, .object(counters.map { name, total in
                    let key = group + "." + name
                    let delta = total - (s.flushed[key] ?? 0)
                    s.flushed[key] = total
                    return (name, .integer(delta))
                })))
            }
            return JSONWriter.write(.object(members)) + "\n"
        }
    }

    static func utcMilliseconds() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int(ts.tv_sec) * 1000 + Int(ts.tv_nsec) / 1_000_000
    }

    /// Carries out one parsed request.
    public func handle(_ request: APIRequest) -> HTTPResponse {
        let state = self.state
        let started = state != .notStarted
        switch request {
        case .getInstanceInfo:
            return .json(.object([("id", .string(instanceID)), ("state", .string(state.rawValue)),
                                  ("vmm_version", .string(Self.apiVersion)), ("app_name", .string("Kite"))]))
        case .getVersion:
            return .json(.object([("firecracker_version", .string(Self.apiVersion))]))
        case .getVMConfig:
            return .json(resources.vmConfigJSON)
        case .getMachineConfig:
            return .json(resources.machine.json)
        case .unsupported(let message):
            return .fault(message)
        case .hangReport(let json):
            guard started else { return .fault(Self.notBeforeStart) }
            switch backend.hangReport(json: json) {
            case .success(let text): return HTTPResponse(status: 200, body: Array(text.utf8), contentType: json ? "application/json" : "text/plain")
            case .failure(let e): return .fault(e.message)
            }
        case .patchDrive(let update):
            guard started else { return .fault(Self.notBeforeStart) }
            guard let index = resources.drives.firstIndex(where: { $0.driveID == update.driveID }) else {
                return .fault("Drive config error: The block device with id \(update.driveID) does not exist.")
            }
            guard let path = update.pathOnHost else { return .noContent }  // a rate limiter only: Kite has none
            let readOnly = resources.drives[index].isReadOnly
            do { try VMResources.checkOpenable(path, writable: !readOnly, what: "Unable to open the block device backing file") } catch {
                return .fault(error.description)
            }
            if let message = backend.updateDrive(index: index, path: path) { return .fault(message) }
            inner.withLock { $0.resources.drives[index].pathOnHost = path }
            return .noContent
        case .patchNetworkInterface(let id):
            guard started else { return .fault(Self.notBeforeStart) }
            guard resources.networkInterfaces.contains(where: { $0.ifaceID == id }) else {
                return .fault("Network interface error: The network interface with id \(id) does not exist.")
            }
            return .noContent  // only rate limiters change, and Kite's are all unlimited
        case .patchVM(let target):
            guard started else { return .fault(Self.notBeforeStart) }
            let message = target == .paused ? backend.pause() : backend.resume()
            if let message { return .fault(message) }
            inner.withLock { $0.state = target == .paused ? .paused : .running }
            return .noContent
        case .action(.flushMetrics):
            guard started else { return .fault(Self.notBeforeStart) }
            return backend.writeMetrics(metricsLine(utcMilliseconds: Self.utcMilliseconds())).map { .fault($0) } ?? .noContent
        case .action(.sendCtrlAltDel):
            guard started else { return .fault(Self.notBeforeStart) }
            return backend.sendCtrlAltDel().map { .fault($0) } ?? .noContent
        case .action(.instanceStart):
            guard !started else { return .fault(Self.notAfterStart) }
            return start().map { .fault($0) } ?? .noContent
        default:
            guard !started else { return .fault(Self.notAfterStart) }
            do { try configure(request) } catch { return .fault(error.description) }
            return .noContent
        }
    }

    /// InstanceStart: builds and starts the machine from the resources configured so far.
    /// Returns nil once it runs, or the fault message.
    public func start() -> String? {
        let resources = self.resources
        guard resources.bootSource != nil else { return "Start microvm error: Cannot start microvm without kernel configuration." }
        if let message = backend.start(resources) { return "Start microvm error: \(message)" }
        inner.withLock { $0.state = .running }
        return nil
    }

    /// The pre-boot requests, which only change the resources (also the config file's path).
    func configure(_ request: APIRequest) throws(SchemaError) {
        var r = resources
        switch request {
        case .putMachineConfig(let body): try r.machine.apply(body.value, patch: false)
        case .patchMachineConfig(let body): try r.machine.apply(body.value, patch: true)
        case .putBootSource(let source):
            try VMResources.checkOpenable(source.kernelImagePath, writable: false, what: "Boot source error: The kernel file cannot be opened")
            if let initrd = source.initrdPath {
                try VMResources.checkOpenable(initrd, writable: false, what: "Boot source error: The initrd file cannot be opened")
            }
            r.bootSource = source
        case .putDrive(let drive): try r.insert(drive)
        case .putNetworkInterface(let net): try r.insert(net)
        case .putVsock(let vsock):
            guard vsock.udsPath.utf8.count <= VsockDeviceConfig.maxSocketPathLength, !vsock.udsPath.isEmpty else {
                throw SchemaError("Cannot create backend for vsock device: the socket path must be 1 to \(VsockDeviceConfig.maxSocketPathLength) bytes")
            }
            r.vsock = vsock
        case .putEntropy: r.entropy = true
        case .putLogger(let logger):
            if let path = logger.logPath { try Self.openForAppending(path, what: "Logger error") }
            r.logger = logger
        case .putMetrics(let path):
            guard r.metricsPath == nil else {
                throw SchemaError("Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed.")
            }
            try Self.openForAppending(path, what: "Metrics error")
            r.metricsPath = path
        default: return
        }
        inner.withLock { $0.resources = r }
    }

    /// Log and metrics paths are often FIFOs that the caller reads: opened non-blocking,
    /// read-write, as Firecracker does, so that opening never waits for a reader.
    static func openForAppending(_ path: String, what: String) throws(SchemaError) {
        let fd = open(path, O_RDWR | O_NONBLOCK | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if fd < 0 { throw SchemaError("\(what): cannot open \(path): \(String(cString: strerror(errno)))") }
        close(fd)
    }

    /// Applies a Firecracker config file (`--config-file`): the same schema as the requests,
    /// applied in Firecracker's order (`VmResources::from_json`). The caller then starts.
    public func applyConfigFile(_ text: [UInt8]) throws(SchemaError) {
        let root: JSONValue
        do { root = try JSONReader.read(text) } catch { throw SchemaError("Invalid config file: \(error)") }
        let o = try ObjectDecoder(root, fields: [], denyUnknown: false)
        func section(_ key: String, _ body: (JSONValue) throws(SchemaError) -> Void) throws(SchemaError) {
            guard let v = o.value(key) else { return }
            do { try body(v) } catch { throw SchemaError("Invalid config file: \(key): \(error.description)") }
        }
        guard o.has("boot-source") else { throw SchemaError("Invalid config file: missing field `boot-source`") }
        guard o.has("drives") else { throw SchemaError("Invalid config file: missing field `drives`") }
        try section("logger") { v throws(SchemaError) in try configure(.putLogger(try LoggerSettings.decode(v))) }
        try section("metrics") { v throws(SchemaError) in try configure(.putMetrics(try MetricsSettings.decode(v))) }
        try section("machine-config") { v throws(SchemaError) in try configure(.putMachineConfig(JSONValueBox(v))) }
        try section("boot-source") { v throws(SchemaError) in try configure(.putBootSource(try BootSource.decode(v))) }
        /// A list section's items, each with the id its own body names (a PUT's path id).
        func items(_ v: JSONValue, idKey: String) throws(SchemaError) -> [(item: JSONValue, id: String)] {
            guard case .array(let list) = v else { throw SchemaError(serde: "invalid type: \(v.kindDescription), expected a sequence") }
            return list.map { item in
                if case .string(let id)? = item[idKey] { return (item, id) }
                return (item, "")
            }
        }
        try section("drives") { v throws(SchemaError) in
            for (item, id) in try items(v, idKey: "drive_id") { try configure(.putDrive(try Drive.decode(item, pathID: id))) }
        }
        try section("network-interfaces") { v throws(SchemaError) in
            for (item, id) in try items(v, idKey: "iface_id") {
                try configure(.putNetworkInterface(try NetworkInterface.decode(item, pathID: id)))
            }
        }
        try section("vsock") { v throws(SchemaError) in try configure(.putVsock(try Vsock.decode(v))) }
        for unsupported in ["balloon", "mmds-config", "cpu-config", "pmem", "memory-hotplug"] {
            try section(unsupported) { _ throws(SchemaError) in throw SchemaError("Kite does not offer this") }
        }
        try section("entropy") { v throws(SchemaError) in
            try EntropySettings.check(v)
            try configure(.putEntropy)
        }
    }
}
