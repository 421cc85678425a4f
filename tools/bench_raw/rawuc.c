/*
 * rawuc.c - the TCG baselines for tools/bench: the least a VMM built on
 * Unicorn's C API (QEMU's TCG as a library) can do, with no hv code at all.
 * Built by tools/bench against the pinned unicorn wheel's own headers and
 * library, as hv/_build_core.py builds hv._core:
 *
 *     gcc -O2 -I<unicorn>/include rawuc.c -L<unicorn>/lib -l:libunicorn.so.2
 *         -Wl,-rpath,<unicorn>/lib
 *
 * into build/bench/rawuc; not part of hv.
 *
 *   rawuc loop N
 *       uc_open(UC_ARCH_X86, UC_MODE_64); 2 MiB of guest RAM from mmap,
 *       handed over with uc_mem_map_ptr (zero-copy, as hv's engine_tcg.c
 *       does); long mode with paging on (identity-mapped 2 MiB pages and a
 *       GDT this program writes into guest memory, the same as rawkvm's).
 *       The guest runs exactly hv's bench-hypercall loop:
 *
 *           out  %al, $0xe0          marker: host reads CLOCK_MONOTONIC
 *       1:  call *%rbx               rbx = stub 0 of a page laid out as hv's
 *           dec  %ecx                hypercall page (b8 00000000 e6 ea c3)
 *           jnz  1b
 *           out  %al, $0xe1          marker: host reads CLOCK_MONOTONIC
 *           hlt                      (uc_emu_start's `until`: never executed)
 *
 *       One UC_HOOK_INSN hook on OUT, in C.  For port 0xea it reads RAX and
 *       the five argument registers (RDI, RSI, RDX, R10, R8) with one
 *       uc_reg_read_batch and writes RAX (the HV_HC_VERSION value): the
 *       least work a hypercall needs.  The emulator is never stopped.
 *       Prints: {"n": N, "ns": <ns between the markers>, "calls": <count>}
 *       With "view" (a diagnostic variant), the hook reads all 18 registers
 *       of hv's register view (struct hv_regs: 16 GPRs, RIP, RFLAGS) in one
 *       batch instead of six, as engine_tcg.c tcg_regs() does.
 *       With "tbs=K" (another diagnostic), K translation blocks are made
 *       before the loop (K `jmp` to the next byte pair, run once): Unicorn
 *       looks up the block of the OUT in a tree of every translated block
 *       to sync RIP before calling an OUT hook, so an OUT costs more in a
 *       process that has translated more code, as a booted guest has.
 *
 *   rawuc create R
 *       One warm-up and R measured rounds of: uc_open, 64 MiB of MAP_NORESERVE
 *       RAM with uc_mem_map_ptr (hv's default guest size), the OUT hook,
 *       the PVH entry state (32-bit flat protected mode, paging off, loaded
 *       through a boot GDT as engine_tcg.c does) at a page holding
 *       `out %al, $0xea`, and uc_emu_start until the hook sees that first
 *       exit (the hook stops the emulator).  Then uc_close and munmap.
 *       Prints per round: {"create_to_exit_ns": .., "teardown_ns": ..}
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unicorn/unicorn.h>

#define HC_PORT        0xea
#define MARK_START     0xe0
#define MARK_END       0xe1
#define VERSION_RESULT 0x10000      /* (1 << 16) | 0, what hv returns */
#define ENOSYS_RESULT  (-38)

/* The guest's loop, assembled by gcc (never run by the host). */
extern const uint8_t loop_code[], loop_code_end[];
asm(".pushsection .rodata\n"
    ".globl loop_code, loop_code_end\n"
    "loop_code:\n"
    "  outb %al, $0xe0\n"
    "1: call *%rbx\n"
    "  dec %ecx\n"
    "  jnz 1b\n"
    "  outb %al, $0xe1\n"
    "loop_code_hlt:\n"
    "  hlt\n"
    "loop_code_end:\n"
    ".popsection\n");

static void check(uc_err err, const char *what)
{
    if (err != UC_ERR_OK) {
        fprintf(stderr, "rawuc: %s: %s\n", what, uc_strerror(err));
        exit(1);
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *guest_ram(size_t size)
{
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        perror("rawuc: mmap guest memory");
        exit(1);
    }
    return m;
}

/* ---- loop ------------------------------------------------------------------ */

#define PML4  0x1000
#define PDPT  0x2000
#define PD    0x3000
#define GDT   0x4000
#define CODE  0x10000
#define STUBS 0x11000          /* a page laid out like hv's hypercall page */
#define STACK 0x100000

static uint64_t t0, t1, calls;
static int full_view;          /* diagnostic: read all 18 registers, as hv's view */

/* The register view hv's engine_tcg.c reads on each exit (struct hv_regs). */
static const int view_regs[18] = {
    UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX,
    UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_RSP, UC_X86_REG_RBP,
    UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
    UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15,
    UC_X86_REG_RIP, UC_X86_REG_RFLAGS,
};

/* The hypercall: number and five arguments in one batch, result in RAX. */
static const int hc_regs[6] = {
    UC_X86_REG_RAX, UC_X86_REG_RDI, UC_X86_REG_RSI,
    UC_X86_REG_RDX, UC_X86_REG_R10, UC_X86_REG_R8,
};

static void on_out(uc_engine *uc, uint32_t port, int size, uint32_t value, void *user)
{
    (void)size; (void)value; (void)user;
    if (port == HC_PORT) {
        uint64_t r[18];
        void *ptrs[18];
        for (int i = 0; i < 18; i++)
            ptrs[i] = &r[i];
        if (full_view)
            uc_reg_read_batch(uc, view_regs, ptrs, 18);
        else
            uc_reg_read_batch(uc, hc_regs, ptrs, 6);
        uint64_t result = r[0] == 0 ? VERSION_RESULT : (uint64_t)ENOSYS_RESULT;
        uc_reg_write(uc, UC_X86_REG_RAX, &result);
        calls++;
    } else if (port == MARK_START) {
        t0 = now_ns();
    } else if (port == MARK_END) {
        t1 = now_ns();
    }
}

static int cmd_loop(unsigned long n, unsigned long tbs)
{
    if (n == 0) {               /* the loop body would run 2^32 times */
        printf("{\"n\": 0, \"ns\": 0, \"calls\": 0}\n");
        return 0;
    }
    uc_engine *uc;
    uc_hook h;
    size_t size = 2 << 20;
    uint8_t *m = guest_ram(size);
    check(uc_open(UC_ARCH_X86, UC_MODE_64, &uc), "uc_open");
    check(uc_mem_map_ptr(uc, 0, size, UC_PROT_ALL, m), "uc_mem_map_ptr");
    check(uc_hook_add(uc, &h, UC_HOOK_INSN, (void *)on_out, NULL, 1, 0, UC_X86_INS_OUT),
          "uc_hook_add OUT");

    /* Identity map of the first 1 GiB with 2 MiB pages (P|W, PS). */
    uint64_t *pml4 = (uint64_t *)(m + PML4), *pdpt = (uint64_t *)(m + PDPT),
             *pd = (uint64_t *)(m + PD);
    pml4[0] = PDPT | 3;
    pdpt[0] = PD | 3;
    for (uint64_t i = 0; i < 512; i++)
        pd[i] = (i << 21) | 0x83;
    /* GDT: null, 64-bit code (0x08), data (0x10) - the same as guests/lib. */
    uint64_t *gdt = (uint64_t *)(m + GDT);
    gdt[0] = 0;
    gdt[1] = 0x00af9a000000ffffull;
    gdt[2] = 0x00cf92000000ffffull;
    /* Code and the stub page (bytes as csrc/hypercall.c hypercall_page_place). */
    size_t code_len = (size_t)(loop_code_end - loop_code);
    if (tbs > (STUBS - CODE - code_len) / 2)
        tbs = (STUBS - CODE - code_len) / 2;
    for (unsigned long i = 0; i < tbs; i++) {      /* jmp .+2: each ends a block */
        m[CODE + 2 * i] = 0xeb;
        m[CODE + 2 * i + 1] = 0x00;
    }
    memcpy(m + CODE + 2 * tbs, loop_code, code_len);
    code_len += 2 * tbs;
    memset(m + STUBS, 0xcc, 4096);
    for (uint32_t nr = 0; nr < 64; nr++) {
        uint8_t *stub = m + STUBS + nr * 32;
        stub[0] = 0xb8;
        memcpy(stub + 1, &nr, 4);
        stub[5] = 0xe6;
        stub[6] = HC_PORT;
        stub[7] = 0xc3;
    }

    /* Long mode with paging, as the guest library leaves the CPU. */
    uc_x86_mmr gdtr = { .base = GDT, .limit = 3 * 8 - 1 };
    uc_x86_msr efer = { .rid = 0xc0000080, .value = 0x500 };      /* LME | LMA */
    uint64_t cr4 = 0x20, cr3 = PML4, cr0 = 0x80010033;            /* PAE; PG|WP|NE|ET|MP|PE */
    uint64_t cs = 0x08, ds = 0x10;
    check(uc_reg_write(uc, UC_X86_REG_GDTR, &gdtr), "GDTR");
    check(uc_reg_write(uc, UC_X86_REG_MSR, &efer), "EFER");
    check(uc_reg_write(uc, UC_X86_REG_CR4, &cr4), "CR4");
    check(uc_reg_write(uc, UC_X86_REG_CR3, &cr3), "CR3");
    check(uc_reg_write(uc, UC_X86_REG_CR0, &cr0), "CR0");
    check(uc_reg_write(uc, UC_X86_REG_CS, &cs), "CS");
    check(uc_reg_write(uc, UC_X86_REG_SS, &ds), "SS");
    check(uc_reg_write(uc, UC_X86_REG_DS, &ds), "DS");
    uint64_t rsp = STACK, rbx = STUBS, rcx = n, rflags = 2;
    check(uc_reg_write(uc, UC_X86_REG_RSP, &rsp), "RSP");
    check(uc_reg_write(uc, UC_X86_REG_RBX, &rbx), "RBX");
    check(uc_reg_write(uc, UC_X86_REG_RCX, &rcx), "RCX");
    check(uc_reg_write(uc, UC_X86_REG_RFLAGS, &rflags), "RFLAGS");

    /* Stop at the hlt (before executing it). */
    check(uc_emu_start(uc, CODE, CODE + code_len - 1, 0, 0), "uc_emu_start");
    uint64_t rax = 0;
    uc_reg_read(uc, UC_X86_REG_RAX, &rax);
    if (calls != n || rax != VERSION_RESULT || !t0 || !t1) {
        fprintf(stderr, "rawuc: %llu hypercalls for n=%lu, rax %#llx\n",
                (unsigned long long)calls, n, (unsigned long long)rax);
        return 1;
    }
    printf("{\"n\": %lu, \"ns\": %llu, \"calls\": %llu}\n", n,
           (unsigned long long)(t1 - t0), (unsigned long long)calls);
    uc_close(uc);
    munmap(m, size);
    return 0;
}

/* ---- create ---------------------------------------------------------------- */

static void on_first_out(uc_engine *uc, uint32_t port, int size, uint32_t value, void *user)
{
    (void)size; (void)value;
    *(uint32_t *)user = port;
    uc_emu_stop(uc);
}

/* One round; returns create -> first exit in ns, teardown in *down. */
static uint64_t create_round(uint64_t *down)
{
    size_t size = 64 << 20;
    uc_engine *uc;
    uc_hook h;
    uint32_t port = 0;
    uint64_t start = now_ns();
    uint8_t *m = guest_ram(size);
    check(uc_open(UC_ARCH_X86, UC_MODE_64, &uc), "uc_open");
    check(uc_mem_map_ptr(uc, 0, size, UC_PROT_ALL, m), "uc_mem_map_ptr");
    check(uc_hook_add(uc, &h, UC_HOOK_INSN, (void *)on_first_out, &port, 1, 0, UC_X86_INS_OUT),
          "uc_hook_add OUT");
    /* The first instruction: the hypercall trap itself, at 1 MiB like a kernel. */
    static const uint8_t code[] = { 0xe6, HC_PORT, 0xf4 };     /* out %al,$0xea; hlt */
    memcpy(m + 0x100000, code, sizeof(code));
    /* hv's boot GDT (csrc/vcpu.c): 0x10 flat 32-bit code, 0x18 flat data. */
    static const uint64_t boot_gdt[4] = { 0, 0, 0x00cf9b000000ffffull, 0x00cf93000000ffffull };
    memcpy(m + 0x500, boot_gdt, sizeof(boot_gdt));
    /* Unicorn's 64-bit CPU starts in long mode without paging; LMA clears
     * only on a PG 1 -> 0 transition (see engine_tcg.c tcg_set_pvh_entry). */
    uc_x86_mmr gdtr = { .base = 0x500, .limit = sizeof(boot_gdt) - 1 };
    uc_x86_msr efer = { .rid = 0xc0000080, .value = 0 };
    uint64_t zero = 0, cr0 = 0x80000011, cs = 0x10, ds = 0x18;
    check(uc_reg_write(uc, UC_X86_REG_GDTR, &gdtr), "GDTR");
    check(uc_reg_write(uc, UC_X86_REG_MSR, &efer), "EFER");
    check(uc_reg_write(uc, UC_X86_REG_CR4, &zero), "CR4");
    check(uc_reg_write(uc, UC_X86_REG_CR3, &zero), "CR3");
    check(uc_reg_write(uc, UC_X86_REG_CR0, &cr0), "CR0 (PG)");
    cr0 = 0x11;
    check(uc_reg_write(uc, UC_X86_REG_CR0, &cr0), "CR0");
    check(uc_reg_write(uc, UC_X86_REG_CS, &cs), "CS");
    check(uc_reg_write(uc, UC_X86_REG_SS, &ds), "SS");
    check(uc_reg_write(uc, UC_X86_REG_DS, &ds), "DS");
    check(uc_reg_write(uc, UC_X86_REG_ES, &ds), "ES");
    uint64_t rbx = 0x1000, rflags = 2, rax = 0;
    check(uc_reg_write(uc, UC_X86_REG_RBX, &rbx), "RBX");
    check(uc_reg_write(uc, UC_X86_REG_RAX, &rax), "RAX");
    check(uc_reg_write(uc, UC_X86_REG_RFLAGS, &rflags), "RFLAGS");
    check(uc_emu_start(uc, 0x100000, UINT64_MAX, 0, 0), "uc_emu_start");
    uint64_t t1 = now_ns();
    if (port != HC_PORT) {
        fprintf(stderr, "rawuc: first exit is port %#x, not the hypercall port\n", port);
        exit(1);
    }
    uc_close(uc);
    munmap(m, size);
    *down = now_ns() - t1;
    return t1 - start;
}

static int cmd_create(int rounds)
{
    uint64_t down;
    create_round(&down);                    /* warm-up: the process's first engine */
    for (int i = 0; i < rounds; i++) {
        uint64_t ns = create_round(&down);
        printf("{\"create_to_exit_ns\": %llu, \"teardown_ns\": %llu}\n",
               (unsigned long long)ns, (unsigned long long)down);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "loop")) {
        unsigned long tbs = 0;
        for (int i = 3; i < argc; i++) {
            if (!strcmp(argv[i], "view"))
                full_view = 1;
            else if (!strncmp(argv[i], "tbs=", 4))
                tbs = strtoul(argv[i] + 4, NULL, 0);
        }
        return cmd_loop(strtoul(argv[2], NULL, 0), tbs);
    }
    if (argc >= 3 && !strcmp(argv[1], "create"))
        return cmd_create(atoi(argv[2]));
    fprintf(stderr, "usage: rawuc loop N [view] [tbs=K] | rawuc create ROUNDS\n");
    return 2;
}
