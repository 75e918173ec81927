import JSON

// Firecracker v1.12.1's request bodies (its swagger document and the serde structs in
// src/vmm/src/vmm_config), as Kite reads them. Docs/Firecracker-API.md says what Kite does
// with each field and what it refuses.

/// `PUT /boot-source`.
public struct BootSource: Equatable, Sendable {
    public var kernelImagePath: String
    public var initrdPath: String?
    public var bootArgs: String?

    static func decode(_ v: JSONValue) throws(SchemaError) -> BootSource {
        let o = try ObjectDecoder(v, fields: ["kernel_image_path", "initrd_path", "boot_args"])
        return BootSource(kernelImagePath: try o.required("kernel_image_path", o.string),
                          initrdPath: try o.string("initrd_path"), bootArgs: try o.string("boot_args"))
    }

    var json: JSONValue {
        .object([("kernel_image_path", .string(kernelImagePath)), ("initrd_path", .optional(initrdPath, JSONValue.string)),
                 ("boot_args", .optional(bootArgs, JSONValue.string))])
    }
}

/// `PUT`/`PATCH /machine-config`.
public struct MachineConfiguration: Equatable, Sendable {
    public var vcpuCount = 1
    public var memSizeMiB = 128
    public var smt = false
    public var trackDirtyPages = false
    /// Firecracker's most vCPUs (`MAX_SUPPORTED_VCPUS`).
    public static let maxVCPUs = 32
    static let fields = ["vcpu_count", "mem_size_mib", "smt", "cpu_template", "track_dirty_pages", "huge_pages"]

    public init() {}

    /// Applies a body: every field for PUT (`vcpu_count` and `mem_size_mib` required), the
    /// ones present for PATCH (at least one).
    mutating func apply(_ v: JSONValue, patch: Bool) throws(SchemaError) {
        let o = try ObjectDecoder(v, fields: Self.fields)
        if patch && !Self.fields.contains(where: o.has) { throw SchemaError("Empty PATCH request.") }
        var next = patch ? self : MachineConfiguration()
        if let n = try o.unsigned("vcpu_count", max: 255, typeName: "u8") { next.vcpuCount = Int(n) }
        else if !patch { throw SchemaError(serde: "missing field `vcpu_count`") }
        if let m = try o.unsigned("mem_size_mib", max: UInt64(Int.max), typeName: "usize") { next.memSizeMiB = Int(m) }
        else if !patch { throw SchemaError(serde: "missing field `mem_size_mib`") }
        if let s = try o.bool("smt") { next.smt = s }
        if let t = try o.bool("track_dirty_pages") { next.trackDirtyPages = t }
        let template = try o.variant("cpu_template", ["C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"])
        let hugePages = try o.variant("huge_pages", ["None", "Transparent", "2M"])
        // Firecracker's own checks (MachineConfigError), then what Kite does not offer.
        guard next.vcpuCount >= 1, next.vcpuCount <= Self.maxVCPUs, !next.smt || next.vcpuCount == 1 || next.vcpuCount % 2 == 0 else {
            throw SchemaError("The vCPU number is invalid: it should be either 1 or an even number when SMT is enabled.")
        }
        guard next.memSizeMiB > 0 else { throw SchemaError("The memory size (MiB) is invalid.") }
        if next.smt { throw SchemaError("Kite presents no SMT siblings: smt must be false") }
        if let template, template != "None" {
            throw SchemaError("Kite has no CPU templates: cpu_template must be None or left out (the guest sees the host CPU's features as KVM offers them)")
        }
        if let hugePages, hugePages != "None" {
            throw SchemaError("Kite backs guest RAM with the host's transparent huge pages as the host allows; huge_pages must be None")
        }
        if next.trackDirtyPages { throw SchemaError("Kite has no snapshots, so no dirty page tracking: track_dirty_pages must be false") }
        self = next
    }

    var json: JSONValue {
        .object([("vcpu_count", .integer(vcpuCount)), ("mem_size_mib", .integer(memSizeMiB)), ("smt", .bool(smt)),
                 ("track_dirty_pages", .bool(trackDirtyPages)), ("huge_pages", .string("None"))])
    }
}

/// `PUT /drives/{drive_id}`.
public struct Drive: Equatable, Sendable {
    public var driveID: String
    public var isRootDevice: Bool
    public var pathOnHost: String
    public var isReadOnly: Bool
    public var partUUID: String?
    public var cacheType: String
    public var ioEngine: String

    static func decode(_ v: JSONValue, pathID: String) throws(SchemaError) -> Drive {
        let o = try ObjectDecoder(v, fields: ["drive_id", "partuuid", "is_root_device", "cache_type", "is_read_only",
                                              "path_on_host", "rate_limiter", "io_engine", "socket"])
        let id = try o.required("drive_id", o.string)
        guard id == pathID else { throw SchemaError("The id from the path does not match the id from the body!") }
        let root = try o.required("is_root_device", o.bool)
        if o.has("socket") { throw SchemaError("Kite has no vhost-user block devices: give path_on_host, not socket") }
        let path = try o.required("path_on_host", o.string)
        try o.unlimitedRateLimiter("rate_limiter")
        return Drive(driveID: try checkedID(id), isRootDevice: root, pathOnHost: path,
                     isReadOnly: try o.bool("is_read_only") ?? false, partUUID: try o.string("partuuid"),
                     cacheType: try o.variant("cache_type", ["Unsafe", "Writeback"]) ?? "Unsafe",
                     ioEngine: try o.variant("io_engine", ["Sync", "Async"]) ?? "Sync")
    }

    var json: JSONValue {
        .object([("drive_id", .string(driveID)), ("partuuid", .optional(partUUID, JSONValue.string)),
                 ("is_root_device", .bool(isRootDevice)), ("cache_type", .string(cacheType)),
                 ("is_read_only", .bool(isReadOnly)), ("path_on_host", .string(pathOnHost)),
                 ("rate_limiter", .null), ("io_engine", .string(ioEngine)), ("socket", .null)])
    }
}

/// `PATCH /drives/{drive_id}`: a new backing file (and, in Firecracker, a rate limiter).
public struct DriveUpdate: Equatable, Sendable {
    public var driveID: String
    public var pathOnHost: String?

    static func decode(_ v: JSONValue, pathID: String) throws(SchemaError) -> DriveUpdate {
        let o = try ObjectDecoder(v, fields: ["drive_id", "path_on_host", "rate_limiter"])
        let id = try o.required("drive_id", o.string)
        guard id == pathID else { throw SchemaError("The id from the path does not match the id from the body!") }
        try o.unlimitedRateLimiter("rate_limiter")
        return DriveUpdate(driveID: try checkedID(id), pathOnHost: try o.string("path_on_host"))
    }
}

/// `PUT /network-interfaces/{iface_id}`.
public struct NetworkInterface: Equatable, Sendable {
    public var ifaceID: String
    public var hostDevName: String
    public var guestMAC: String?

    static func decode(_ v: JSONValue, pathID: String) throws(SchemaError) -> NetworkInterface {
        let o = try ObjectDecoder(v, fields: ["iface_id", "host_dev_name", "guest_mac", "rx_rate_limiter", "tx_rate_limiter"])
        let id = try o.required("iface_id", o.string)
        guard id == pathID else {
            throw SchemaError("The id from the path [\(pathID)] does not match the id from the body [\(id)]!")
        }
        let dev = try o.required("host_dev_name", o.string)
        try o.unlimitedRateLimiter("rx_rate_limiter")
        try o.unlimitedRateLimiter("tx_rate_limiter")
        return NetworkInterface(ifaceID: try checkedID(id), hostDevName: dev, guestMAC: try o.string("guest_mac"))
    }

    var json: JSONValue {
        .object([("iface_id", .string(ifaceID)), ("host_dev_name", .string(hostDevName)),
                 ("guest_mac", .optional(guestMAC, JSONValue.string)), ("rx_rate_limiter", .null), ("tx_rate_limiter", .null)])
    }
}

/// `PUT /vsock`.
public struct Vsock: Equatable, Sendable {
    public var guestCID: UInt64
    public var udsPath: String
    public var vsockID: String?

    static func decode(_ v: JSONValue) throws(SchemaError) -> Vsock {
        let o = try ObjectDecoder(v, fields: ["vsock_id", "guest_cid", "uds_path"])
        let cid = try o.required("guest_cid") { k throws(SchemaError) in try o.unsigned(k, max: UInt64(UInt32.max), typeName: "u32") }
        guard cid >= 3 else { throw SchemaError("invalid value: guest_cid \(cid); the guest's CID must be at least 3") }
        return Vsock(guestCID: cid, udsPath: try o.required("uds_path", o.string), vsockID: try o.string("vsock_id"))
    }

    var json: JSONValue { .object([("guest_cid", .integer(Int(guestCID))), ("uds_path", .string(udsPath))]) }
}

/// `PUT /logger`.
public struct LoggerSettings: Equatable, Sendable {
    public var logPath: String?
    public var level: String?
    public var showLevel: Bool?
    public var showLogOrigin: Bool?
    public var module: String?

    static let levels = ["off", "trace", "debug", "info", "warn", "warning", "error"]

    static func decode(_ v: JSONValue) throws(SchemaError) -> LoggerSettings {
        let o = try ObjectDecoder(v, fields: ["log_path", "level", "show_level", "show_log_origin", "module"])
        let level = try o.string("level")
        if let level, !levels.contains(level.lowercased()) {
            throw SchemaError("Invalid level: \(level). Valid levels: Error, Warning, Info, Debug, Trace, Off")
        }
        return LoggerSettings(logPath: try o.string("log_path"), level: level, showLevel: try o.bool("show_level"),
                              showLogOrigin: try o.bool("show_log_origin"), module: try o.string("module"))
    }

    var json: JSONValue {
        .object([("log_path", .optional(logPath, JSONValue.string)), ("level", .optional(level, JSONValue.string)),
                 ("show_level", .optional(showLevel, JSONValue.bool)), ("show_log_origin", .optional(showLogOrigin, JSONValue.bool)),
                 ("module", .optional(module, JSONValue.string))])
    }
}

/// `PUT /metrics`: the file's path (Firecracker reads this body leniently: other fields pass).
enum MetricsSettings {
    static func decode(_ v: JSONValue) throws(SchemaError) -> String {
        let o = try ObjectDecoder(v, fields: ["metrics_path"], denyUnknown: false)
        return try o.required("metrics_path", o.string)
    }
}

/// `PUT /entropy`: only an unlimited rate limiter, if any.
enum EntropySettings {
    static func check(_ v: JSONValue) throws(SchemaError) {
        try ObjectDecoder(v, fields: ["rate_limiter"]).unlimitedRateLimiter("rate_limiter")
    }
}

/// `PUT /actions`.
public enum ActionType: String, Sendable {
    case instanceStart = "InstanceStart"
    case sendCtrlAltDel = "SendCtrlAltDel"
    case flushMetrics = "FlushMetrics"

    static func decode(_ v: JSONValue) throws(SchemaError) -> ActionType {
        let o = try ObjectDecoder(v, fields: ["action_type"])
        let name = try o.required("action_type") { k throws(SchemaError) in
            try o.variant(k, ["FlushMetrics", "InstanceStart", "SendCtrlAltDel"])
        }
        return ActionType(rawValue: name)!
    }
}

/// `PATCH /vm`.
public enum VMState: String, Sendable {
    case paused = "Paused"
    case resumed = "Resumed"

    static func decode(_ v: JSONValue) throws(SchemaError) -> VMState {
        let o = try ObjectDecoder(v, fields: ["state"])
        return VMState(rawValue: try o.required("state") { k throws(SchemaError) in try o.variant(k, ["Paused", "Resumed"]) })!
    }
}
