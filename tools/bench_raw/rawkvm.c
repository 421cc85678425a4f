/*
 * rawkvm.c - the baselines for tools/bench: the least a KVM user-space VMM
 * can do, with no hv code at all.  Built by tools/bench (gcc -O2) into
 * build/bench/rawkvm; not part of hv.
 *
 *   rawkvm loop N [sregs]
 *       One VM, 2 MiB of RAM, one vCPU put straight into 64-bit long mode
 *       with KVM_SET_SREGS (identity-mapped 2 MiB pages and a GDT that this
 *       program writes into guest memory).  The guest runs exactly hv's
 *       bench-hypercall loop:
 *
 *           out  %al, $0xe0          marker: host reads CLOCK_MONOTONIC
 *       1:  call *%rbx               rbx = stub 0 of a page laid out as hv's
 *           dec  %ecx                hypercall page (b8 00000000 e6 ea c3)
 *           jnz  1b
 *           out  %al, $0xe1          marker: host reads CLOCK_MONOTONIC
 *           hlt
 *
 *       and the host answers each `out %al, $0xea` by writing RAX (the
 *       HV_HC_VERSION value) through KVM_CAP_SYNC_REGS.  kvm_valid_regs is
 *       KVM_SYNC_X86_REGS only, unless "sregs" is given: then it is
 *       REGS|SREGS, as hv's engine_kvm.c asks for (a diagnostic variant).
 *       Prints: {"n": N, "ns": <ns between the markers>, "exits": <count>}
 *
 *   rawkvm create R [cpuid]
 *       /dev/kvm is opened once (as hv does once per process); then one
 *       warm-up and R measured rounds of: KVM_CREATE_VM, a 64 MiB
 *       MAP_NORESERVE memslot (hv's default guest size), KVM_CREATE_VCPU,
 *       mmap kvm_run, (KVM_SET_CPUID2 with a table fetched once, if
 *       "cpuid"), SET_SREGS/SET_REGS to the PVH entry state (32-bit flat
 *       protected mode, paging off) at a page holding `out %al, $0xea`,
 *       and KVM_RUN to the first exit.  Then teardown.
 *       Prints per round: {"create_to_exit_ns": .., "teardown_ns": ..}
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define HC_PORT     0xea
#define MARK_START  0xe0
#define MARK_END    0xe1
#define VERSION_RESULT 0x10000      /* (1 << 16) | 0, what hv returns */

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
    "  hlt\n"
    "loop_code_end:\n"
    ".popsection\n");

static void die(const char *what)
{
    fprintf(stderr, "rawkvm: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int kvm_fd;
static long run_size;

static void kvm_open(void)
{
    kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm_fd < 0)
        die("open /dev/kvm");
    if (ioctl(kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        die("KVM API version");
    run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size <= 0)
        die("KVM_GET_VCPU_MMAP_SIZE");
}

struct vm {
    int fd, vcpu;
    uint8_t *mem;
    size_t mem_size;
    struct kvm_run *run;
};

static void vm_create(struct vm *vm, size_t mem_size)
{
    vm->fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    if (vm->fd < 0)
        die("KVM_CREATE_VM");
    vm->mem_size = mem_size;
    vm->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (vm->mem == MAP_FAILED)
        die("mmap guest memory");
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = mem_size,
        .userspace_addr = (uint64_t)(uintptr_t)vm->mem,
    };
    if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    vm->vcpu = ioctl(vm->fd, KVM_CREATE_VCPU, 0ul);
    if (vm->vcpu < 0)
        die("KVM_CREATE_VCPU");
    vm->run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu, 0);
    if (vm->run == MAP_FAILED)
        die("mmap kvm_run");
}

static void vm_destroy(struct vm *vm)
{
    munmap(vm->run, (size_t)run_size);
    close(vm->vcpu);
    close(vm->fd);
    munmap(vm->mem, vm->mem_size);
}

static struct kvm_segment seg(uint16_t selector, uint8_t type, int code64)
{
    return (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = selector, .type = type,
        .present = 1, .dpl = 0, .db = code64 ? 0 : 1, .s = 1, .l = code64 ? 1 : 0, .g = 1,
    };
}

/* ---- loop ------------------------------------------------------------------ */

#define PML4  0x1000
#define PDPT  0x2000
#define PD    0x3000
#define GDT   0x4000
#define CODE  0x10000
#define STUBS 0x11000          /* a page laid out like hv's hypercall page */
#define STACK 0x100000

static int cmd_loop(unsigned long n, int sync_sregs)
{
    struct vm vm;
    kvm_open();
    int sync = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
    if (sync < 0 || !(sync & KVM_SYNC_X86_REGS))
        die("KVM_CAP_SYNC_REGS");
    vm_create(&vm, 2 << 20);
    uint8_t *m = vm.mem;

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
    memcpy(m + CODE, loop_code, (size_t)(loop_code_end - loop_code));
    memset(m + STUBS, 0xcc, 4096);
    for (uint32_t nr = 0; nr < 64; nr++) {
        uint8_t *stub = m + STUBS + nr * 32;
        stub[0] = 0xb8;
        memcpy(stub + 1, &nr, 4);
        stub[5] = 0xe6;
        stub[6] = HC_PORT;
        stub[7] = 0xc3;
    }

    struct kvm_sregs s;
    if (ioctl(vm.vcpu, KVM_GET_SREGS, &s) < 0)
        die("KVM_GET_SREGS");
    s.cs = seg(0x08, 0xb, 1);
    s.ds = s.es = s.fs = s.gs = s.ss = seg(0x10, 0x3, 0);
    s.tr = (struct kvm_segment){ .limit = 0x67, .type = 0xb, .present = 1 };
    s.gdt.base = GDT;
    s.gdt.limit = 3 * 8 - 1;
    s.cr0 = 0x80010033;         /* PG | WP | NE | ET | MP | PE */
    s.cr3 = PML4;
    s.cr4 = 0x20;               /* PAE */
    s.efer = 0x500;             /* LME | LMA */
    if (ioctl(vm.vcpu, KVM_SET_SREGS, &s) < 0)
        die("KVM_SET_SREGS");
    struct kvm_regs r;
    memset(&r, 0, sizeof(r));
    r.rip = CODE;
    r.rsp = STACK;
    r.rbx = STUBS;              /* stub 0: HV_HC_VERSION */
    r.rcx = n;
    r.rflags = 2;
    if (ioctl(vm.vcpu, KVM_SET_REGS, &r) < 0)
        die("KVM_SET_REGS");
    if (n == 0) {               /* the loop body would run 2^32 times */
        printf("{\"n\": 0, \"ns\": 0, \"exits\": 0}\n");
        return 0;
    }

    struct kvm_run *run = vm.run;
    run->kvm_valid_regs = KVM_SYNC_X86_REGS | (sync_sregs ? KVM_SYNC_X86_SREGS : 0);
    uint64_t t0 = 0, t1 = 0, exits = 0, calls = 0;
    for (;;) {
        if (ioctl(vm.vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR)
                continue;
            die("KVM_RUN");
        }
        exits++;
        if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
            if (run->io.port == HC_PORT) {
                run->s.regs.regs.rax = VERSION_RESULT;
                run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
                calls++;
            } else if (run->io.port == MARK_START) {
                t0 = now_ns();
            } else if (run->io.port == MARK_END) {
                t1 = now_ns();
            }
            continue;
        }
        if (run->exit_reason == KVM_EXIT_HLT)
            break;
        fprintf(stderr, "rawkvm: unexpected exit %u at rip %#llx\n", run->exit_reason,
                (unsigned long long)run->s.regs.regs.rip);
        return 1;
    }
    if (calls != n) {
        fprintf(stderr, "rawkvm: %llu hypercall exits for n=%lu\n", (unsigned long long)calls, n);
        return 1;
    }
    printf("{\"n\": %lu, \"ns\": %llu, \"exits\": %llu}\n", n,
           (unsigned long long)(t1 - t0), (unsigned long long)exits);
    vm_destroy(&vm);
    return 0;
}

/* ---- create ---------------------------------------------------------------- */

static struct kvm_cpuid2 *cpuid_table(void)
{
    size_t n = 256;
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
    c->nent = (uint32_t)n;
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0)
        die("KVM_GET_SUPPORTED_CPUID");
    return c;
}

/* One round; returns create->first exit in ns, teardown in *down. */
static uint64_t create_round(struct kvm_cpuid2 *cpuid, uint64_t *down)
{
    struct vm vm;
    uint64_t t0 = now_ns();
    vm_create(&vm, 64 << 20);
    /* The first instruction: the hypercall trap itself, at 1 MiB like a kernel. */
    static const uint8_t code[] = { 0xe6, HC_PORT, 0xf4 };     /* out %al,$0xea; hlt */
    memcpy(vm.mem + 0x100000, code, sizeof(code));
    if (cpuid && ioctl(vm.vcpu, KVM_SET_CPUID2, cpuid) < 0)
        die("KVM_SET_CPUID2");
    struct kvm_sregs s;
    if (ioctl(vm.vcpu, KVM_GET_SREGS, &s) < 0)
        die("KVM_GET_SREGS");
    s.cs = seg(0x10, 0xb, 0);
    s.ds = s.es = s.fs = s.gs = s.ss = seg(0x18, 0x3, 0);
    s.tr = (struct kvm_segment){ .limit = 0x67, .type = 0xb, .present = 1 };
    s.cr0 = 0x11;
    s.cr3 = s.cr4 = s.efer = 0;
    if (ioctl(vm.vcpu, KVM_SET_SREGS, &s) < 0)
        die("KVM_SET_SREGS");
    struct kvm_regs r;
    memset(&r, 0, sizeof(r));
    r.rip = 0x100000;
    r.rbx = 0x1000;
    r.rflags = 2;
    if (ioctl(vm.vcpu, KVM_SET_REGS, &r) < 0)
        die("KVM_SET_REGS");
    if (ioctl(vm.vcpu, KVM_RUN, 0) < 0)
        die("KVM_RUN");
    uint64_t t1 = now_ns();
    if (vm.run->exit_reason != KVM_EXIT_IO || vm.run->io.port != HC_PORT) {
        fprintf(stderr, "rawkvm: first exit %u, not the hypercall port\n", vm.run->exit_reason);
        exit(1);
    }
    vm_destroy(&vm);
    *down = now_ns() - t1;
    return t1 - t0;
}

static int cmd_create(int rounds, int with_cpuid)
{
    kvm_open();
    struct kvm_cpuid2 *cpuid = with_cpuid ? cpuid_table() : NULL;
    uint64_t down;
    create_round(cpuid, &down);             /* warm-up: the process's first VM */
    for (int i = 0; i < rounds; i++) {
        uint64_t ns = create_round(cpuid, &down);
        printf("{\"create_to_exit_ns\": %llu, \"teardown_ns\": %llu}\n",
               (unsigned long long)ns, (unsigned long long)down);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "loop"))
        return cmd_loop(strtoul(argv[2], NULL, 0), argc > 3 && !strcmp(argv[3], "sregs"));
    if (argc >= 3 && !strcmp(argv[1], "create"))
        return cmd_create(atoi(argv[2]), argc > 3 && !strcmp(argv[3], "cpuid"));
    fprintf(stderr, "usage: rawkvm loop N [sregs] | rawkvm create ROUNDS [cpuid]\n");
    return 2;
}
