/*
 * cpu-exact - guest-visible CPU behaviour that must be the same on every
 * engine (issue 12): what a real CPU does, checked from inside the guest.
 * The command line's `case=` picks one group; each ends with one result line.
 *
 *   io-privilege  ring 3 with IOPL 0: OUT/IN to hv's hypercall port is #GP(0);
 *                 a port the TSS I/O bitmap allows works; IOPL 3 allows all
 *   page-faults   #PF error codes (P, W, U, RSVD, I/D) and CR2, for a write to
 *                 a read-only page, an NX fetch, unmapped and supervisor pages;
 *                 CR2 survives an exit to the parent; #GP(0) on a
 *                 non-canonical address
 *   soft-int      int3 / int $0x40 through valid gates (RIP after the
 *                 instruction); `int $13` pushes no error code; a vector past
 *                 the IDT limit is #GP(vector*8+2); ring-3 int3 through a
 *                 DPL-0 gate is #GP(3*8+2)
 *   into          INTO in 64-bit mode is #UD with OF clear or set (it is
 *                 invalid there); in compatibility mode it does nothing with
 *                 OF clear and raises #OF (a trap: RIP past it) with OF set;
 *                 `int $3` (CD 03) is vector 3 past its two bytes, and
 *                 `int $0x40` after three prefixes returns past all of them
 *                 (with `lock-ud`: after LOCK it is #UD); on an Intel
 *                 CPU, SYSCALL in compatibility mode is #UD
 *   cr-reserved   MOV to CR0, CR3, CR4 or CR8 with a reserved bit set (or
 *                 a combination the SDM forbids) is #GP(0); valid writes work
 *   syscall       SYSCALL/SYSRET between ring 3 and ring 0 (STAR, LSTAR,
 *                 FMASK, RCX, R11); #UD while EFER.SCE is 0; SYSRET to a
 *                 non-canonical RIP is #GP
 *   twelve-outs   twelve port writes in one straight run of code
 *   kick-rmw      n= read-modify-writes of memory while hv's timer interrupts
 *                 the guest every few microseconds: the counts stay exact
 *   sti-upcall    an upcall raised while IF=0 arrives as soon as STI sets IF,
 *                 without waiting for an exit
 *   sti-shadow    ... but not before the instruction after STI has run:
 *                 `sti; nop` never takes it before the nop (with `prompt`,
 *                 for an engine that delivers as soon as it may: right
 *                 after it), `sti; hlt` takes it after the hlt (the wake-up
 *                 is not lost)
 *
 *   tsc           (--deterministic) RDTSC follows the instruction clock
 *   timer-rearm   n= set_timer calls, half of them already due
 *
 * `pvm` on the command line: the KVM is kvm_pvm (a software KVM that runs
 * ring 3 natively as a host process), which differs from a CPU in three
 * ways hv cannot change: IOPL 3 does not open ports to ring 3, ring-3 INT3
 * ignores the gate's DPL, SYSCALL with EFER.SCE clear is not #UD,
 * SYSRETQ from its (emulated) ring 0 raises #GP, and MOV to CR0 or CR4
 * ignores bits 63:32 instead of raising #GP.
 * Those checks are skipped, saying so (docs/engines.md).
 */
#include <stdint.h>
#include "events.h"
#include "hv.h"
#include "printf.h"
#include "probe.h"
#include "ring3.h"
#include "test.h"
#include "traps.h"
#include "virtio_cmdline.h"
#include "x86.h"

#define VBASE       0x40000000ull       /* the 4 KiB test pages */
#define MSR_STAR    0xc0000081
#define MSR_LSTAR   0xc0000082
#define MSR_FMASK   0xc0000084
#define EFER_SCE    0x1
#define RFLAGS_DF   0x400
#define EVENT_VECTOR 0x30

/* snippets.S */
void out_hypercall(void), out_dx_hypercall(void), in_hypercall_port(void);
void out_port80(void), outw_port80(void), twelve_outs(void);
void write_read_only(void), fetch_nx(void), write_unmapped(void), read_unmapped(void);
void read_supervisor(void), read_reserved(void), read_noncanonical(void);
void do_int3(void), do_int3_fault(void), do_int40(void), do_int13(void), bad_cr3(void);
void into_of_clear(void), into_of_set(void), do_int_3_long(void);
void compat_into_of_clear(void), compat_into_of_set(void), compat_syscall(void);
void do_int40_prefixed(void), do_int40_locked(void);
extern const char do_int40_prefixed_after[], do_int40_locked_insn[];
extern const char compat_syscall_insn[];
extern const char into_of_clear_insn[], into_of_set_insn[], do_int_3_long_after[];
extern const char compat_into_of_set_after[];
void user_syscall(void), syscall_entry(void), sysret_noncanonical(void);
void write_cr0(void), write_cr4(void), write_cr8(void);
extern const char write_cr0_insn[], write_cr4_insn[], write_cr8_insn[];
extern uint64_t cr_value;
extern const char out_hypercall_insn[], out_dx_hypercall_insn[], in_hypercall_port_insn[];
extern const char outw_port80_insn[], write_read_only_insn[], write_unmapped_insn[];
extern const char read_unmapped_insn[], read_supervisor_insn[], read_reserved_insn[];
extern const char read_noncanonical_insn[], do_int3_after[], do_int3_fault_insn[];
extern const char do_int40_insn[], do_int40_after[], do_int13_after[], bad_cr3_insn[];
extern const char user_syscall_insn[], user_syscall_after[], sysret_noncanonical_insn[];
extern uint64_t syscall_seen_rcx, syscall_seen_r11, syscall_seen_cs, syscall_seen_ss;
extern uint64_t syscall_seen_rflags, sysret_seen_cs, sysret_seen_ss;

static bool on_pvm(const char *what)
{
    size_t len;
    if (!cmdline_value("pvm", 0, &len))
        return false;
    printf("skipped on kvm_pvm: %s\n", what);
    return true;
}

static void expect_fault(const char *what, const struct probe *p, uint64_t vector,
                         uint64_t error, const void *rip)
{
    if (p->vector != vector || p->error != error || p->rip != (uint64_t)rip)
        test_failure("%s: vector %ld error 0x%lx rip 0x%lx, expected vector %ld error 0x%lx "
                     "rip 0x%lx", what, (long)p->vector, p->error, p->rip, (long)vector,
                     error, (uint64_t)rip);
}

static void expect_no_fault(const char *what, const struct probe *p)
{
    if (p->vector != PROBE_NO_FAULT)
        test_failure("%s: vector %ld error 0x%lx rip 0x%lx, expected no fault", what,
                     (long)p->vector, p->error, p->rip);
}

static uint64_t read_cr2(void)
{
    uint64_t v;
    asm volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}

static void wrmsr(uint32_t msr, uint64_t v)
{
    asm volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

/* ---- io-privilege ----------------------------------------------------- */

static void case_io_privilege(void)
{
    struct probe p;
    ring3_init(1);
    ring3_allow_port(0x80);
    probe_ring3(out_hypercall, 0, &p);
    expect_fault("ring 3 out imm8 to the hypercall port", &p, X86_GP, 0, out_hypercall_insn);
    probe_ring3(out_dx_hypercall, 0, &p);
    expect_fault("ring 3 out dx to the hypercall port", &p, X86_GP, 0, out_dx_hypercall_insn);
    probe_ring3(in_hypercall_port, 0, &p);
    expect_fault("ring 3 in from the hypercall port", &p, X86_GP, 0, in_hypercall_port_insn);
    probe_ring3(outw_port80, 0, &p);
    expect_fault("ring 3 outw to 0x80 (0x81 denied)", &p, X86_GP, 0, outw_port80_insn);
    probe_ring3(out_port80, 0, &p);
    expect_no_fault("ring 3 out to 0x80 (allowed by the bitmap)", &p);
    if (!on_pvm("ring 3 with IOPL 3")) {
        probe_ring3(out_hypercall, RFLAGS_IOPL3, &p);
        expect_no_fault("ring 3 with IOPL 3: a hypercall", &p);
    }
    test_success();
}

/* ---- page-faults ------------------------------------------------------ */

static uint64_t test_pt[512] __attribute__((aligned(4096)));
static uint8_t backing[4][4096] __attribute__((aligned(4096)));

/* VBASE (1 GiB) is the first 2 MiB page of the second page directory in
 * start.S's identity map; give it a 4 KiB page table of our own. */
static void map_test_pages(void)
{
    uint64_t cr3;
    asm volatile("mov %%cr3, %0" : "=r"(cr3));
    uint64_t *pml4 = (uint64_t *)(cr3 & ~0xfffull);
    uint64_t *pdpt = (uint64_t *)(pml4[0] & ~0xfffull);
    uint64_t *pd = (uint64_t *)(pdpt[1] & ~0xfffull);
    pdpt[1] |= PTE_U;
    pd[0] = (uint64_t)test_pt | PTE_P | PTE_W | PTE_U;
    backing[1][0] = 0xc3;                                           /* ret */
    test_pt[0] = (uint64_t)backing[0] | PTE_P | PTE_U;                  /* read-only */
    test_pt[1] = (uint64_t)backing[1] | PTE_P | PTE_W | PTE_U | 1ull << 63;   /* NX */
    test_pt[2] = 0;                                                     /* not present */
    test_pt[3] = (uint64_t)backing[3] | PTE_P | PTE_W;                  /* supervisor */
    pml4[2] = (uint64_t)backing[2] | PTE_P | PTE_W | PTE_PS;            /* PS: reserved */
    asm volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
}

static void expect_pf(const char *what, const struct probe *p, uint64_t error,
                      const void *rip, uint64_t cr2)
{
    expect_fault(what, p, X86_PF, error, rip);
    if (p->cr2 != cr2)
        test_failure("%s: CR2 0x%lx, expected 0x%lx", what, p->cr2, cr2);
}

static void case_page_faults(void)
{
    struct probe p;
    ring3_init(0);
    map_test_pages();
    probe_ring0(write_read_only, &p);
    expect_pf("write to a read-only page", &p, PF_P | PF_W, write_read_only_insn, VBASE);
    probe_ring0(fetch_nx, &p);
    expect_pf("fetch from an NX page", &p, PF_P | PF_I, (void *)(VBASE + 0x1000),
              VBASE + 0x1000);
    probe_ring0(write_unmapped, &p);
    expect_pf("write to an unmapped page", &p, PF_W, write_unmapped_insn, VBASE + 0x2000);
    probe_ring0(read_unmapped, &p);
    expect_pf("read from an unmapped page", &p, 0, read_unmapped_insn, VBASE + 0x2000);
    probe_ring0(read_reserved, &p);
    expect_pf("read through a PML4 entry with PS set", &p, PF_P | PF_RSVD, read_reserved_insn,
              0x10000000000ull);
    probe_ring3(read_supervisor, 0, &p);
    expect_pf("ring 3 read of a supervisor page", &p, PF_P | PF_U, read_supervisor_insn,
              VBASE + 0x3000);

    /* CR2 is the guest's until it faults again, across exits to the parent
     * (the console line below is one). */
    probe_ring0(write_unmapped, &p);
    printf("page-faults: cr2=0x%lx\n", read_cr2());
    GUEST_ASSERT_EQ(read_cr2(), VBASE + 0x2000);
    asm volatile("mov %0, %%cr2" : : "r"(0x12345678ull));     /* the guest's own value */
    printf("page-faults: cr2 written\n");
    GUEST_ASSERT_EQ(read_cr2(), 0x12345678);

    probe_ring0(read_noncanonical, &p);
    expect_fault("read of a non-canonical address", &p, X86_GP, 0, read_noncanonical_insn);
    test_success();
}

/* ---- soft-int --------------------------------------------------------- */

static void case_soft_int(void)
{
    struct probe p;
    probe_ring0(do_int3, &p);
    expect_fault("int3 through a valid gate", &p, X86_BP, 0, do_int3_after);

    idt_set_gate(0x40, probe_stub_0x40);
    probe_ring0(do_int40, &p);
    expect_fault("int $0x40 through a valid gate", &p, 0x40, 0, do_int40_after);

    /* int $13 is a software interrupt: no error code on the stack.  The
     * stub assumes none, so the frame is only right if none was pushed. */
    idt_set_gate(X86_GP, probe_stub_13_noerror);
    probe_ring0(do_int13, &p);
    if (p.cs != GDT_CODE64)
        test_failure("int $13: frame has cs=0x%lx (an error code was pushed?)", p.cs);
    expect_fault("int $13", &p, X86_GP, 0, do_int13_after);
    traps_init();                       /* the usual gates back */

    /* The IDT ends before vector 0x40: #GP(0x40*8+2), the fault at the int. */
    struct desc_ptr idtr, shorter;
    asm volatile("sidt %0" : "=m"(idtr));
    shorter = idtr;
    shorter.limit = 0x40 * 16 - 1;
    lidt(&shorter);
    probe_ring0(do_int40, &p);
    lidt(&idtr);
    expect_fault("int $0x40 past the IDT limit", &p, X86_GP, IDT_ERROR(0x40, 0), do_int40_insn);

    /* Ring 3 may use a software interrupt only through a gate of DPL 3. */
    ring3_init(0);
    if (!on_pvm("ring 3 int3 through a DPL-0 gate")) {
        probe_ring3(do_int3_fault, 0, &p);
        expect_fault("ring 3 int3 through a DPL-0 gate", &p, X86_GP, IDT_ERROR(X86_BP, 0),
                     do_int3_fault_insn);
    }
    idt_set_dpl(X86_BP, 3);
    probe_ring3(do_int3_fault, 0, &p);
    idt_set_dpl(X86_BP, 0);
    expect_fault("ring 3 int3 through a DPL-3 gate", &p, X86_BP, 0, do_int3_fault_insn + 1);
    test_success();
}

/* ---- into ------------------------------------------------------------ */

static bool vendor_is_intel(void);

static void case_into(void)
{
    struct probe p;
    probe_ring0(into_of_clear, &p);
    expect_fault("into with OF clear (64-bit mode)", &p, X86_UD, 0, into_of_clear_insn);
    probe_ring0(into_of_set, &p);
    expect_fault("into with OF set (64-bit mode)", &p, X86_UD, 0, into_of_set_insn);
    probe_ring0(do_int_3_long, &p);
    expect_fault("int $3 (CD 03)", &p, X86_BP, 0, do_int_3_long_after);
    idt_set_gate(0x40, probe_stub_0x40);
    probe_ring0(do_int40_prefixed, &p);
    expect_fault("66 2e 40 int $0x40", &p, 0x40, 0, do_int40_prefixed_after);
    size_t len;
    if (cmdline_value("lock-ud", 0, &len)) {    /* not TCG: QEMU ignores the prefix */
        probe_ring0(do_int40_locked, &p);
        expect_fault("lock int $0x40", &p, X86_UD, 0, do_int40_locked_insn);
    }

    /* Compatibility mode: start.S's GDT plus a 32-bit ring-0 code segment
     * (snippets.S: COMPAT_CS = 0x18). */
    static const uint64_t gdt[] __attribute__((aligned(16))) = {
        0, 0x00af9a000000ffffull, 0x00cf92000000ffffull,
        0x00cf9a000000ffffull,          /* 0x18: ring-0 code, D=1, L=0 */
    };
    struct desc_ptr saved, compat = { .limit = sizeof(gdt) - 1, .base = (uint64_t)gdt };
    asm volatile("sgdt %0" : "=m"(saved));
    asm volatile("lgdt %0" : : "m"(compat));
    probe_ring0(compat_into_of_clear, &p);
    struct probe q;
    probe_ring0(compat_into_of_set, &q);
    struct probe s = { .vector = PROBE_NO_FAULT };
    bool intel = vendor_is_intel();
    if (intel) {                        /* AMD goes to CSTAR instead */
        uint64_t efer = rdmsr(MSR_EFER);
        wrmsr(MSR_STAR, (uint64_t)GDT_DATA << 48 | (uint64_t)GDT_CODE64 << 32);
        wrmsr(MSR_LSTAR, (uint64_t)syscall_entry);
        wrmsr(MSR_EFER, efer | EFER_SCE);   /* SYSCALL enabled: the mode alone decides */
        probe_ring0(compat_syscall, &s);
        wrmsr(MSR_EFER, efer);
    }
    asm volatile("lgdt %0" : : "m"(saved));
    if (intel)
        expect_fault("syscall in compatibility mode (Intel)", &s, X86_UD, 0, compat_syscall_insn);
    expect_no_fault("into with OF clear (compatibility mode)", &p);
    expect_fault("into with OF set (compatibility mode)", &q, X86_OF, 0,
                 compat_into_of_set_after);
    if (q.cs != 0x18)
        test_failure("into with OF set: the frame's CS is 0x%lx, expected 0x18", q.cs);
    test_success();
}

/* ---- cr-reserved ----------------------------------------------------- */

static uint64_t read_cr(int n)
{
    uint64_t v = 0;
    if (n == 0)
        asm volatile("mov %%cr0, %0" : "=r"(v));
    else if (n == 4)
        asm volatile("mov %%cr4, %0" : "=r"(v));
    else
        asm volatile("mov %%cr8, %0" : "=r"(v));
    return v;
}

/* MOV of `value` to CR`n` must be #GP(0) at the instruction; the register
 * keeps its value. */
static void expect_cr_fault(const char *what, int n, uint64_t value)
{
    static const struct { void (*fn)(void); const char *insn; } writes[9] = {
        [0] = { write_cr0, write_cr0_insn }, [4] = { write_cr4, write_cr4_insn },
        [8] = { write_cr8, write_cr8_insn },
    };
    struct probe p;
    uint64_t before = read_cr(n);
    cr_value = value;
    probe_ring0(writes[n].fn, &p);
    uint64_t after = read_cr(n);
    cr_value = before;
    if (after != before)
        probe_ring0(writes[n].fn, &p);   /* put it back before reporting */
    expect_fault(what, &p, X86_GP, 0, writes[n].insn);
    if (after != before)
        test_failure("%s: CR%d changed from 0x%lx to 0x%lx", what, n, before, after);
}

static void case_cr_reserved(void)
{
    struct probe p;
    probe_ring0(bad_cr3, &p);
    expect_fault("mov to cr3 with bit 62 set", &p, X86_GP, 0, bad_cr3_insn);

    uint64_t cr0 = read_cr(0), cr4 = read_cr(4);
    if (!on_pvm("mov to cr0/cr4 with bit 32 set"))
        expect_cr_fault("mov to cr0 with bit 32 set", 0, cr0 | 1ull << 32);
    expect_cr_fault("mov to cr0 with NW set and CD clear", 0, (cr0 | 1ull << 29) & ~(1ull << 30));
    expect_cr_fault("mov to cr4 with bit 15 (reserved) set", 4, cr4 | 1ull << 15);
    if (!on_pvm("mov to cr4 with bit 32 set"))
        expect_cr_fault("mov to cr4 with bit 32 set", 4, cr4 | 1ull << 32);
    uint32_t l1[4];
    cpuid(1, l1);
    if (!(l1[2] & 1u << 5))             /* no VMX: CR4.VMXE is reserved */
        expect_cr_fault("mov to cr4 with VMXE set, no VMX in CPUID", 4, cr4 | 1ull << 13);
    expect_cr_fault("mov to cr8 with bit 4 set", 8, 0x10);
    expect_cr_fault("mov to cr4 clearing PAE in long mode", 4, cr4 & ~(1ull << 5));
    expect_cr_fault("mov to cr0 clearing PG in long mode", 0, cr0 & ~(1ull << 31));

    /* Valid writes still work: the same values back, a TPR (not read back:
     * TCG's CR8 reads 0, docs/engines.md). */
    cr_value = cr0;
    probe_ring0(write_cr0, &p);
    expect_no_fault("mov to cr0 of its own value", &p);
    cr_value = cr4;
    probe_ring0(write_cr4, &p);
    expect_no_fault("mov to cr4 of its own value", &p);
    cr_value = 5;
    probe_ring0(write_cr8, &p);
    expect_no_fault("mov to cr8 of 5", &p);
    cr_value = 0;
    probe_ring0(write_cr8, &p);
    test_success();
}

/* ---- syscall ---------------------------------------------------------- */

static bool vendor_is_intel(void)
{
    uint32_t r[4];
    cpuid(0, r);
    return r[1] == 0x756e6547;          /* "Genu" */
}

static void case_syscall(void)
{
    struct probe p;
    ring3_init(0);
    uint64_t efer = rdmsr(MSR_EFER);
    if (!on_pvm("syscall with EFER.SCE clear")) {
        wrmsr(MSR_EFER, efer & ~(uint64_t)EFER_SCE);
        probe_ring3(user_syscall, 0, &p);
        expect_fault("syscall with EFER.SCE clear", &p, X86_UD, 0, user_syscall_insn);
    }

    if (on_pvm("syscall and sysret"))
        test_success();
    wrmsr(MSR_STAR, (uint64_t)GDT_DATA << 48 | (uint64_t)GDT_CODE64 << 32);
    wrmsr(MSR_LSTAR, (uint64_t)syscall_entry);
    wrmsr(MSR_FMASK, RFLAGS_DF);
    wrmsr(MSR_EFER, efer | EFER_SCE);
    probe_ring3(user_syscall, 0, &p);
    expect_no_fault("syscall and sysret", &p);
    GUEST_ASSERT_EQ(syscall_seen_rcx, (uint64_t)user_syscall_after);
    GUEST_ASSERT_EQ(syscall_seen_r11 & RFLAGS_DF, RFLAGS_DF);     /* the user's RFLAGS */
    GUEST_ASSERT_EQ(syscall_seen_rflags & RFLAGS_DF, 0);          /* FMASK cleared DF */
    GUEST_ASSERT_EQ(syscall_seen_cs, GDT_CODE64);
    GUEST_ASSERT_EQ(syscall_seen_ss, GDT_DATA);
    GUEST_ASSERT_EQ(sysret_seen_cs, SEL_USER_CODE | RPL_USER);
    GUEST_ASSERT_EQ(sysret_seen_ss, SEL_USER_DATA | RPL_USER);

    /* Intel raises #GP(0) in ring 0 before SYSRET changes anything; AMD
     * returns to ring 3 and faults there on the fetch. */
    probe_ring0(sysret_noncanonical, &p);
    if (vendor_is_intel()) {
        expect_fault("sysret to a non-canonical RIP (Intel)", &p, X86_GP, 0,
                     sysret_noncanonical_insn);
        GUEST_ASSERT_EQ(p.cs, GDT_CODE64);
    } else {
        GUEST_ASSERT_EQ(p.vector, X86_GP);
        GUEST_ASSERT_EQ(p.cs & 3, 3);
    }
    test_success();
}

/* ---- twelve-outs ------------------------------------------------------ */

static void case_twelve_outs(void)
{
    struct probe p;
    probe_ring0(twelve_outs, &p);
    expect_no_fault("twelve outs", &p);
    test_success();
}

/* ---- kick-rmw --------------------------------------------------------- */

static volatile uint64_t counters[3];

static void case_kick_rmw(void)
{
    uint64_t n = cmdline_uint("n", 2000000), every = cmdline_uint("every", 1024);
    for (uint64_t i = 0; i < n; i++) {
        asm volatile("incq %0; addq $3, %1; decq %2"
                     : "+m"(counters[0]), "+m"(counters[1]), "+m"(counters[2]));
        if (i % every == 0)
            hv_set_timer(hv_clock_read() + 3000);   /* a kick in ~3 us */
    }
    printf("kick-rmw: n=%lu counters %lu %lu %ld\n", n, counters[0], counters[1],
           (long)counters[2]);
    GUEST_ASSERT_EQ(counters[0], n);
    GUEST_ASSERT_EQ(counters[1], 3 * n);
    GUEST_ASSERT_EQ(counters[2], -n);
    test_success();
}

/* ---- sti-upcall ------------------------------------------------------- */

static volatile unsigned upcalls;

static void on_event(unsigned event)
{
    (void)event;
    upcalls++;
}

static void case_sti_upcall(void)
{
    if (hv_events_init(EVENT_VECTOR, on_event))
        test_error("event_register failed");
    cli();
    hv_event_raise(1);                  /* pending; IF=0 holds the upcall */
    GUEST_ASSERT_EQ(upcalls, 0);
    uint64_t spins = 0, limit = cmdline_uint("n", 1000000);
    sti();
    while (!upcalls && spins < limit)   /* no exit in this loop */
        spins++;
    cli();
    printf("sti-upcall: upcalls=%u after %lu spins\n", upcalls, spins);
    GUEST_ASSERT_EQ(upcalls, 1);
    test_success();
}

/* ---- sti-shadow ------------------------------------------------------ */

void shadow_entry(void), sti_nop(void), sti_hlt(void);
extern const char sti_nop_shadowed[], sti_nop_after[], sti_hlt_after[];
extern volatile uint64_t shadow_seen_rip;

static void case_sti_shadow(void)
{
    if (hv_events_init(EVENT_VECTOR, on_event))
        test_error("event_register failed");
    idt_set_gate(EVENT_VECTOR, shadow_entry);
    struct { const char *what; void (*run)(void); const char *expected; } cases[] = {
        { "sti; nop", sti_nop, sti_nop_after },
        { "sti; hlt", sti_hlt, sti_hlt_after },
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cli();
        shadow_seen_rip = 0;
        upcalls = 0;
        /* A timer in 200 ms wakes a hlt whose wake-up was lost; the event
         * raised now is the one that must strike right after the shadow. */
        hv_set_timer(hv_clock_read() + 200000000ull);
        hv_event_raise(1);
        cases[i].run();
        hv_set_timer(0);
        size_t len;
        uint64_t seen = shadow_seen_rip;
        if (seen == (uint64_t)sti_nop_shadowed)
            test_failure("sti; nop: the upcall struck inside STI's shadow, at 0x%lx", seen);
        if (cases[i].run == sti_nop && seen == 0 && !cmdline_value("prompt", 0, &len))
            continue;               /* not yet: this engine delivers at its next exit */
        if (seen != (uint64_t)cases[i].expected)
            test_failure("%s: the upcall struck at 0x%lx, expected 0x%lx (after the "
                         "instruction that follows sti)", cases[i].what, shadow_seen_rip,
                         (uint64_t)cases[i].expected);
    }
    printf("sti-shadow: both upcalls after the shadow\n");
    test_success();
}

/* ---- tsc (deterministic mode) ----------------------------------------- */

/* Under --deterministic the TSC is the instruction clock: two runs print
 * the same values, and a loop of known length advances it by about that
 * many instructions. */
static void case_tsc(void)
{
    uint64_t t0 = rdtsc();
    for (volatile unsigned i = 0; i < 1000; i++)
        ;
    uint64_t t1 = rdtsc();
    uint64_t clock = hv_clock_read();
    printf("tsc: t0=%lu t1=%lu clock=%lu\n", t0, t1, clock);
    GUEST_ASSERT(t1 > t0);
    GUEST_ASSERT(t1 - t0 >= 1000 && t1 - t0 < 100000);   /* instructions, not host cycles */
    GUEST_ASSERT(clock >= t1 && clock - t1 < 1000);
    test_success();
}

/* ---- timer-rearm ------------------------------------------------------ */

/* n= set_timer calls alternating between a deadline already past (it fires
 * at once) and one far ahead (it re-arms the host timer): the work must
 * stay proportional to n (tests time it only through the suite's budget). */
static void case_timer_rearm(void)
{
    uint64_t n = cmdline_uint("n", 1000000);
    for (uint64_t i = 0; i < n; i++)
        hv_set_timer(i & 1 ? hv_clock_read() + 1000000000ull : 1);
    hv_set_timer(0);
    printf("timer-rearm: %lu calls\n", n);
    test_success();
}

int main(void)
{
    if (!hv_hypercalls_ready())
        test_skip("not running under hv");
    static const struct { const char *name; void (*run)(void); } cases[] = {
        { "io-privilege", case_io_privilege }, { "page-faults", case_page_faults },
        { "soft-int", case_soft_int },         { "cr-reserved", case_cr_reserved },
        { "into", case_into },
        { "syscall", case_syscall },           { "twelve-outs", case_twelve_outs },
        { "kick-rmw", case_kick_rmw },         { "sti-upcall", case_sti_upcall },
        { "sti-shadow", case_sti_shadow },
        { "timer-rearm", case_timer_rearm },   { "tsc", case_tsc },
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (cmdline_is("case", cases[i].name))
            cases[i].run();
    test_error("no such case (case=...)");
}
