import SystemPackage

/// Where a virtio-net device sends and receives Ethernet frames. Every frame crossing this
/// interface starts with the 12-byte `virtio_net_hdr_v1` (a tap opened with IFF_VNET_HDR
/// speaks exactly this format), so the device copies frames through untranslated.
///
/// A backend never blocks: `receiveFrame` returns nil when nothing is pending, and a
/// frame the host cannot take right now fails with an `Errno` (the device drops it, as a
/// NIC drops frames when its link is congested).
public protocol NetworkBackend: AnyObject {
    /// Readable (EPOLLIN) while frames are pending for the guest; the device thread watches
    /// it and then serves the receive queue. -1 when the backend has nothing to poll.
    var fd: Int32 { get }
    /// Moves the next pending frame (vnet header + Ethernet frame) into `buffer` and returns
    /// its length, or nil when nothing is pending (EAGAIN). A frame longer than `buffer` is
    /// cut to `buffer.count`; the device's buffer is large enough that this never matters.
    func receiveFrame(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int?
    /// Hands one frame (vnet header + Ethernet frame) to the host.
    func sendFrame(_ frame: UnsafeRawBufferPointer) throws(Errno)
}

/// Why a network backend could not be opened; each reads as one line for the CLI.
public enum NetworkBackendError: Error, Equatable, CustomStringConvertible {
    /// /dev/net/tun could not be opened (missing module or device node, no permission).
    case cannotOpenTun(path: String, Errno)
    /// TUNSETIFF or TUNSETVNETHDRSZ failed for the named interface.
    case cannotAttach(name: String, Errno)
    /// The interface name is not one Linux accepts.
    case invalidName(String)

    public var description: String {
        switch self {
        case .cannotOpenTun(let path, let e):
            "\(path): \(e) (need CAP_NET_ADMIN / the tun module)"
        case .cannotAttach(let name, let e):
            "tap \(name): \(e)" + Self.hint(for: e)
        case .invalidName(let name):
            "tap name '\(name)' is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
        }
    }

    private static func hint(for e: Errno) -> String {
        switch e {
        case .notPermitted, .permissionDenied: " (need CAP_NET_ADMIN, or a persistent tap owned by this user)"
        case .resourceBusy: " (in use by another process)"
        case .invalidArgument: " (an existing interface of another kind has this name?)"
        default: ""
        }
    }
}
