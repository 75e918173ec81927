import JSON

/// A request of Firecracker's API, routed and its body read (Firecracker's
/// `parsed_request.rs`). Parsing checks the body's shape only; whether the request is
/// allowed now (before or after InstanceStart) is the controller's question.
public enum APIRequest: Equatable, Sendable {
    case getInstanceInfo
    case getVersion
    case getVMConfig
    case getMachineConfig
    case putMachineConfig(JSONValueBox)
    case patchMachineConfig(JSONValueBox)
    case putBootSource(BootSource)
    case putDrive(Drive)
    case patchDrive(DriveUpdate)
    case putNetworkInterface(NetworkInterface)
    case patchNetworkInterface(String)
    case putVsock(Vsock)
    case putEntropy
    case putLogger(LoggerSettings)
    case putMetrics(String)
    case action(ActionType)
    case patchVM(VMState)
    /// A Firecracker feature Kite does not offer: 400 with this message.
    case unsupported(String)
    /// Kite's own: the hang report of `kite inspect`, as text or JSON.
    case hangReport(json: Bool)

    /// Routes `request` and reads its body. Errors carry Firecracker's messages.
    public static func parse(_ request: HTTPRequest) throws(SchemaError) -> APIRequest {
        let method = request.method
        var tokens = request.path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        tokens.removeFirst()  // before the leading "/"
        if tokens.last == "" && tokens.count > 1 { tokens.removeLast() }
        let resource = tokens.first ?? ""
        let id = tokens.count > 1 ? tokens[1] : nil
        let hasBody = !request.body.isEmpty
        func invalid() -> SchemaError { SchemaError("Invalid request method and/or path: \(method) \(resource).") }
        func body() throws(SchemaError) -> JSONValue {
            guard hasBody else { throw SchemaError("Empty \(method) request.") }
            do { return try JSONReader.read(request.body) } catch {
                throw SchemaError(serde: error.description)
            }
        }
        func pathID() throws(SchemaError) -> String {
            guard let id, tokens.count == 2 else {
                if tokens.count > 2 { throw invalid() }
                throw SchemaError("The ID cannot be empty.")
            }
            return try checkedID(id)
        }
        if method == "GET" && hasBody { throw SchemaError("GET request cannot have a body.") }
        guard ["GET", "PUT", "PATCH"].contains(method) else { throw invalid() }

        switch (method, resource) {
        case ("GET", ""): return .getInstanceInfo
        case ("GET", "version"): return .getVersion
        case ("GET", "vm") where id == "config" && tokens.count == 2: return .getVMConfig
        case ("GET", "machine-config") where tokens.count == 1: return .getMachineConfig
        case ("PUT", "machine-config") where tokens.count == 1: return .putMachineConfig(JSONValueBox(try body()))
        case ("PATCH", "machine-config") where tokens.count == 1: return .patchMachineConfig(JSONValueBox(try body()))
        case ("PUT", "boot-source") where tokens.count == 1: return .putBootSource(try BootSource.decode(try body()))
        case ("PUT", "drives"):
            let id = try pathID()
            return .putDrive(try Drive.decode(try body(), pathID: id))
        case ("PATCH", "drives"):
            let id = try pathID()
            return .patchDrive(try DriveUpdate.decode(try body(), pathID: id))
        case ("PUT", "network-interfaces"):
            let id = try pathID()
            return .putNetworkInterface(try NetworkInterface.decode(try body(), pathID: id))
        case ("PATCH", "network-interfaces"):
            let id = try pathID()
            let o = try ObjectDecoder(try body(), fields: ["iface_id", "rx_rate_limiter", "tx_rate_limiter"])
            let bodyID = try o.required("iface_id", o.string)
            guard bodyID == id else {
                throw SchemaError("The id from the path [\(id)] does not match the id from the body [\(bodyID)]!")
            }
            try o.unlimitedRateLimiter("rx_rate_limiter")
            try o.unlimitedRateLimiter("tx_rate_limiter")
            return .patchNetworkInterface(id)
        case ("PUT", "vsock") where tokens.count == 1: return .putVsock(try Vsock.decode(try body()))
        case ("PUT", "entropy") where tokens.count == 1:
            try EntropySettings.check(try body())
            return .putEntropy
        case ("PUT", "logger") where tokens.count == 1: return .putLogger(try LoggerSettings.decode(try body()))
        case ("PUT", "metrics") where tokens.count == 1: return .putMetrics(try MetricsSettings.decode(try body()))
        case ("PUT", "actions") where tokens.count == 1: return .action(try ActionType.decode(try body()))
        case ("PATCH", "vm") where tokens.count == 1: return .patchVM(try VMState.decode(try body()))
        case (_, "mmds"):
            if method != "GET" { _ = try body() }
            return .unsupported("Kite has no MMDS (the microVM metadata service); pass metadata to the guest another way")
        case (_, "balloon"):
            if method != "GET" { _ = try body() }
            return .unsupported("Kite has no balloon device")
        case ("PUT", "snapshot"):
            _ = try body()
            return .unsupported("Kite has no snapshots")
        case ("PUT", "cpu-config") where tokens.count == 1:
            _ = try body()
            return .unsupported("Kite has no CPU templates")
        case ("GET", "kite") where id == "hang-report" && tokens.count == 2:
            return .hangReport(json: request.query == "format=json")
        default: throw invalid()
        }
    }
}

/// A JSON body kept for the controller to read against the current state (a PATCH
/// applies to what is there). Equatable by its text, for tests.
public struct JSONValueBox: Equatable, Sendable {
    public let value: JSONValue
    public init(_ value: JSONValue) { self.value = value }
    public static func == (a: Self, b: Self) -> Bool { JSONWriter.write(a.value) == JSONWriter.write(b.value) }
}
