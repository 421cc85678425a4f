/*
 * x86.h - the few CPU facts and instructions the guest kernels use.
 *
 * Included from C and from assembly (start.S, entry.S): the numbers are plain
 * #defines, the inline functions are hidden from the assembler.
 * Bit names follow the Intel SDM, Vol. 3A, ch. 2 (control registers) and
 * ch. 4.5 (4-level paging).
 */
#ifndef GUEST_X86_H
#define GUEST_X86_H

/* Control registers and EFER (SDM Vol. 3A 2.5, 2.2.1). */
#define CR0_PE          0x00000001      /* protected mode */
#define CR0_ET          0x00000010      /* hard-wired on modern CPUs */
#define CR0_NE          0x00000020      /* native x87 errors (VMX wants it) */
#define CR0_WP          0x00010000      /* honour read-only pages in ring 0 */
#define CR0_PG          0x80000000      /* paging */
#define CR4_PAE         0x00000020      /* required for long mode */
#define MSR_EFER        0xc0000080
#define EFER_LME        0x00000100      /* long mode enable */
#define EFER_NXE        0x00000800      /* the NX page bit means something */

/* Page-table entry bits (SDM Vol. 3A 4.5). */
#define PTE_P           0x001
#define PTE_W           0x002
#define PTE_PS          0x080           /* in a PD entry: a 2 MiB page */
#define PAGE_SHIFT_2M   21

/* Our GDT (start.S): selectors are byte offsets into it. */
#define GDT_CODE64      0x08
#define GDT_DATA        0x10

/* IDT gate: present, DPL 0, 64-bit interrupt gate (IF cleared on entry). */
#define IDT_GATE_INTR   0x8e
#define IDT_ENTRIES     256
#define EXCEPTION_COUNT 32              /* vectors 0..31 are the CPU's */
#define TRAP_STUB_SIZE  16              /* entry.S: one stub per exception */

/* Exception vectors (SDM Vol. 3A 6.3.1). */
#define X86_BP          3
#define X86_OF          4
#define X86_UD          6
#define X86_DF          8
#define X86_NP          11
#define X86_GP          13
#define X86_PF          14
/* Page-fault error code bits (SDM Vol. 3A 4.7). */
#define PF_P            0x01            /* the page was present (protection) */
#define PF_W            0x02            /* a write */
#define PF_U            0x04            /* from ring 3 */
#define PF_RSVD         0x08            /* a reserved bit was set */
#define PF_I            0x10            /* an instruction fetch */
/* The error code of a fault about IDT entry v (SDM Vol. 3A 6.13). */
#define IDT_ERROR(v, ext) ((v) * 8 + 2 + (ext))

/* Legacy I/O the fallback path (stock QEMU) uses. */
#define SERIAL_COM1     0x3f8           /* 16550 data register */
#define QEMU_DEBUG_EXIT 0xf4            /* -device isa-debug-exit,iobase=0xf4 */

#ifndef __ASSEMBLER__
#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v)
{
    asm volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outl(uint16_t port, uint32_t v)
{
    asm volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

/* One exit for the whole string on KVM: it batches string port I/O. */
static inline void outsb(uint16_t port, const void *buf, unsigned long n)
{
    asm volatile("rep outsb" : "+S"(buf), "+c"(n) : "d"(port) : "memory");
}

static inline void cpuid(uint32_t leaf, uint32_t r[4])
{
    asm volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                 : "a"(leaf), "c"(0));
}

/* The time-stamp counter; LFENCE keeps it from being read early
 * (SDM vol. 2, RDTSC), so it brackets the work before it. */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return (uint64_t)hi << 32 | lo;
}

static inline void cli(void) { asm volatile("cli" : : : "memory"); }
static inline void sti(void) { asm volatile("sti" : : : "memory"); }
static inline void hlt(void) { asm volatile("hlt" : : : "memory"); }

/*
 * Wait for an interrupt: STI takes effect only after the next instruction
 * (SDM Vol. 2B, STI), so no interrupt can slip in between STI and HLT and be
 * missed; the interrupt that ends the HLT runs its handler, then CLI.
 * Only call this when an interrupt is sure to come (e.g. an upcall is
 * pending), or it sleeps until one does.  (An exact "sti; nop; cli" window
 * is not enough on every engine: a software KVM may open it late.)
 */
static inline void wait_for_interrupt(void)
{
    asm volatile("sti; hlt; cli" : : : "memory");
}

struct __attribute__((packed)) desc_ptr {
    uint16_t limit;
    uint64_t base;
};

static inline void lidt(const struct desc_ptr *d)
{
    asm volatile("lidt %0" : : "m"(*d));
}
#endif /* !__ASSEMBLER__ */

#endif /* GUEST_X86_H */
