#if canImport(Glibc)
import Glibc
import HostCalls
#endif
import CHost
import SystemPackage

/// A Linux tap interface (/dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR): every
/// frame read or written carries a 12-byte virtio_net_hdr_v1 in front, the same header
/// the guest uses, so frames pass through untranslated. No offloads are enabled
/// (TUNSETOFFLOAD is never called), so the kernel hands over only whole, checksummed
/// frames, matching a device that offers no offload features.
///
/// The descriptor is non-blocking and close-on-exec. An interface created here disappears
/// when this object goes away; a persistent one (`ip tuntap add NAME mode tap vnet_hdr`)
/// stays. Bringing the interface up and bridging or addressing it is the host's job.
public final class TapBackend: NetworkBackend {
    public static let devicePath = "/dev/net/tun"
    /// <linux/if_tun.h> request numbers (_IOW('T', 202, int) and _IOW('T', 216, int)).
    static let tunSetInterface: UInt = 0x4004_54CA
    static let tunSetVnetHeaderSize: UInt = 0x4004_54D8
    static let flagTap: UInt16 = 0x0002
    static let flagNoPacketInfo: UInt16 = 0x1000
    static let flagVnetHeader: UInt16 = 0x4000
    /// sizeof(struct ifreq) on 64-bit Linux: ifr_name[16] then a 24-byte union.
    static let ifreqSize = 40
    static let vnetHeaderSize: Int32 = 12

    public let fd: Int32
    /// The interface name the kernel reports (differs from the request only for patterns
    /// such as `kite%d`).
    public let name: String

    /// Creates or attaches to tap `name`. `devicePath` exists for tests.
    public init(name: String, devicePath: String = TapBackend.devicePath) throws(NetworkBackendError) {
        guard NetworkDeviceConfig.isValidInterfaceName(name) else { throw .invalidName(name) }
        let fd = open(devicePath, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw .cannotOpenTun(path: devicePath, Errno(rawValue: errno)) }

        var request = [UInt8](repeating: 0, count: Self.ifreqSize)
        for (i, byte) in name.utf8.enumerated() { request[i] = byte }     // <= 15 bytes, NUL follows
        request.put(Self.flagTap | Self.flagNoPacketInfo | Self.flagVnetHeader, at: 16)
        var rc = request.withUnsafeMutableBytes { host_ioctl_ptr(fd, Self.tunSetInterface, $0.baseAddress) }
        guard rc >= 0 else {
            close(fd)
            throw .cannotAttach(name: name, Errno(rawValue: -rc))
        }
        let actual = String(decoding: request.prefix(16).prefix { $0 != 0 }, as: UTF8.self)

        var headerSize = Self.vnetHeaderSize
        rc = host_ioctl_ptr(fd, Self.tunSetVnetHeaderSize, &headerSize)
        guard rc >= 0 else {
            close(fd)
            throw .cannotAttach(name: actual, Errno(rawValue: -rc))
        }
        self.fd = fd
        self.name = actual
    }

    deinit { close(fd) }

    public func receiveFrame(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int? {
        let n = retryingInterrupted { read(fd, buffer.baseAddress, buffer.count) }
        if n >= 0 { return n }
        let e = errno
        if e == EAGAIN || e == EWOULDBLOCK { return nil }
        throw Errno(rawValue: e)
    }

    public func sendFrame(_ frame: UnsafeRawBufferPointer) throws(Errno) {
        let n = retryingInterrupted { write(fd, frame.baseAddress, frame.count) }
        if n >= 0 { return }        // tun takes a frame whole or not at all
        throw Errno(rawValue: errno)
    }
}
