/// What firmware does at the reset vector, reduced to its essence: reset the machine.
///
/// Linux reboots through the "BIOS" when nothing else is left: with a hardware-reduced
/// FADT and no EFI, `reboot_type` becomes BOOT_EFI, which falls through to BOOT_BIOS, a
/// real-mode jump to F000:FFF0. Without firmware there the guest would spin on zeros
/// forever; this stub pulses the i8042 reset line instead, which Kite turns into a reboot.
public enum ResetVector {
    /// Real-mode code: `mov al, 0xFE; out 0x64, al; hlt; jmp $-3`.
    public static let code: [UInt8] = [0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD]
}
