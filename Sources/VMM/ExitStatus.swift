import Devices

/// How `kite run` ends, and the process exit status for each. Documented in `--help`.
public enum MachineExit: Equatable, Sendable {
    case powerOff
    case reboot
    /// Triple fault, failed entry or KVM internal error on a vCPU; `report` holds its registers.
    case crash(vcpu: Int, reason: String, report: String)
    /// No progress for the hang timeout while the hang watchdog saw the guest stuck;
    /// `summary` is the diagnosis in one line.
    case hang(seconds: Int, summary: String)
    /// SIGINT, SIGTERM or the console escape sequence.
    case stopped(signal: Int32)
    /// Kite itself failed while the guest ran.
    case vmmError(String)
    /// The guest wrote `value` to the isa-debug-exit port (`--test-devices`): status
    /// (value << 1) | 1, as under QEMU, in place of the statuses above.
    case debugExit(value: UInt64)

    public var status: Int32 {
        switch self {
        case .powerOff: ExitStatus.powerOff
        case .reboot: ExitStatus.reboot
        case .crash: ExitStatus.crash
        case .hang: ExitStatus.hang
        case .stopped(let signal): signal == 0 ? ExitStatus.escape : 128 + signal
        case .vmmError: ExitStatus.vmmError
        case .debugExit(let value): DebugExitDevice.exitStatus(forValue: value)
        }
    }
}

public enum ExitStatus {
    public static let powerOff: Int32 = 0
    public static let vmmError: Int32 = 1
    public static let usage: Int32 = 2
    public static let reboot: Int32 = 3
    public static let crash: Int32 = 4
    public static let hang: Int32 = 5
    /// The console escape sequence (Ctrl-A x) ended the VM.
    public static let escape: Int32 = 6

    public static let helpText = """
    Exit status:
      0    the guest powered off
      1    Kite failed while the guest was running
      2    bad usage or setup error (bad argument, kernel, initrd, /dev/kvm)
      3    the guest rebooted (Kite does not restart it)
      4    the guest crashed: triple fault, failed entry or KVM internal error
           (the vCPU's registers are printed on stderr)
      5    the guest hung: no progress for --hang-timeout seconds and the hang
           watchdog found it stuck (the hang report is printed on stderr)
      6    stopped with the console escape sequence
      130  SIGINT; 143 SIGTERM (vCPUs and devices are stopped in order first)
    With --test-devices, a guest write of V to port 0xf4 (isa-debug-exit) ends
    kite with status (V << 1) | 1 (modulo 256), as under QEMU; these statuses
    then overlap the ones above, so read them as the test kernel defines them.
    """
}
