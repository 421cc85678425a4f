/*
 * engine_kvm.c - the KVM engine (/dev/kvm).
 *
 * T:470 KVM runs the guest; this file only translates.  Two choices keep the
 * hot path short: registers travel in the shared kvm_run page
 * (KVM_CAP_SYNC_REGS: no GET/SET_REGS ioctl per exit, each of which costs
 * microseconds), and the supported-CPUID table is fetched once per process.
 * KVM keeps VMCALL for itself, which is why hv's hypercalls are port I/O.
 * Interrupts use KVM's user-space irqchip: KVM_INTERRUPT when the guest can
 * take one, request_interrupt_window otherwise (Documentation/virt/kvm/api.rst).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "engine_kvm.h"

_Static_assert(sizeof(struct kvm_regs) == sizeof(struct hv_regs),
               "hv_regs mirrors kvm_regs so the register view is zero-copy");

#define SYNC_FIELDS (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)
#define CPUID_MAX_ENTRIES 256

/* Process-wide, set up once: the /dev/kvm fd, the kvm_run size, CPUID. */
static struct {
    pthread_once_t once, cpuid_once;
    int fd;
    int error;                  /* -errno if unusable */
    char why[160];
    long run_size;
    struct kvm_cpuid2 *cpuid;
} kvm = { .once = PTHREAD_ONCE_INIT, .cpuid_once = PTHREAD_ONCE_INIT, .fd = -1 };

struct kvm_vm {
    int fd;
    struct kvm_userspace_memory_region ram;     /* slot 0: all of guest RAM */
    uint64_t *log;              /* the dirty log being kept (kvm_dirty_log) */
    int manual_clear;           /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is on */
};

static void build_cpuid(void)
{
    size_t bytes = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = calloc(1, bytes);
    if (!c)
        return;
    c->nent = CPUID_MAX_ENTRIES - 5;    /* room for hv's three leaves and the two clock leaves */
    if (ioctl(kvm.fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
        free(c);
        return;
    }
    /* Drop KVM's own paravirt leaves: 0x40000000.. belongs to hv here, and
     * the host's clock leaves, replaced below. */
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        if ((e->function >= 0x40000000 && e->function <= 0x4fffffff) ||
            e->function == HV_CPUID_TSC_LEAF || e->function == HV_CPUID_FREQ_LEAF)
            continue;
        if (e->function == 0 && e->eax < HV_CPUID_FREQ_LEAF)
            e->eax = HV_CPUID_FREQ_LEAF;    /* leaves up to 0x16; absent ones read as zeros */
        if (e->function == 1)
            e->ecx |= 1u << 31;         /* "running under a hypervisor" */
        c->entries[n++] = *e;
    }
    /* The TSC's rate, as on TCG (platform.c): a KVM guest's TSC is the
     * host's, so Linux need not calibrate it against a PIT hv lacks. */
    for (uint32_t leaf = HV_CPUID_TSC_LEAF; leaf <= HV_CPUID_FREQ_LEAF; leaf++) {
        struct kvm_cpuid_entry2 *e = &c->entries[n++];
        memset(e, 0, sizeof(*e));
        e->function = leaf;
        uint32_t r[4];
        engine_clock_cpuid(leaf, r);
        e->eax = r[0]; e->ebx = r[1]; e->ecx = r[2]; e->edx = r[3];
    }
    for (uint32_t leaf = HV_CPUID_BASE; leaf <= HV_CPUID_MAX_LEAF; leaf++) {
        struct kvm_cpuid_entry2 *e = &c->entries[n++];
        memset(e, 0, sizeof(*e));
        e->function = leaf;
        engine_hv_cpuid(leaf, &e->eax, &e->ebx, &e->ecx, &e->edx);
    }
    c->nent = n;
    kvm.cpuid = c;
}

static void kvm_open_once(void)
{
    kvm.fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm.fd < 0) {
        kvm.error = -errno;
        if (errno == ENOENT)
            snprintf(kvm.why, sizeof(kvm.why), "/dev/kvm does not exist: load the kvm module "
                     "(kvm_intel or kvm_amd) or use --engine tcg");
        else if (errno == EACCES || errno == EPERM)
            snprintf(kvm.why, sizeof(kvm.why), "no permission to open /dev/kvm: add your user "
                     "to the 'kvm' group (then log in again) or use --engine tcg");
        else
            snprintf(kvm.why, sizeof(kvm.why), "cannot open /dev/kvm: %s", strerror(errno));
        return;
    }
    if (ioctl(kvm.fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        kvm.error = -ENOTSUP;
        snprintf(kvm.why, sizeof(kvm.why), "/dev/kvm speaks an unknown KVM API version");
        return;
    }
    int sync = ioctl(kvm.fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
    if (sync < 0 || (sync & SYNC_FIELDS) != SYNC_FIELDS) {
        kvm.error = -ENOTSUP;
        snprintf(kvm.why, sizeof(kvm.why), "KVM lacks KVM_CAP_SYNC_REGS (needs Linux >= 4.16)");
        return;
    }
    kvm.run_size = ioctl(kvm.fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (kvm.run_size <= 0) {
        kvm.error = -ENOTSUP;
        snprintf(kvm.why, sizeof(kvm.why), "KVM_GET_VCPU_MMAP_SIZE failed");
    }
}

static int kvm_probe(char *why, size_t len)
{
    pthread_once(&kvm.once, kvm_open_once);
    if (why && len)
        snprintf(why, len, "%s", kvm.error ? kvm.why : "");
    return kvm.error;
}

/* The set-up ioctls, made on whatever thread creates a partition or vCPU:
 * a kick that reaches that thread (hv's signal, sent to the process from
 * outside, lands on any thread that does not block it) interrupts e.g.
 * KVM_CREATE_VM, which can simply be asked again.  (KVM_RUN is not retried:
 * an interruption is how a kick gets the vCPU out.) */
static int ioctl_retry(int fd, unsigned long request, void *arg)
{
    int r;
    do
        r = ioctl(fd, request, arg);
    while (r < 0 && errno == EINTR);
    return r;
}

static int kvm_vm_create(void **out)
{
    int err = kvm_probe(NULL, 0);
    if (err)
        return err;
    struct kvm_vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return -ENOMEM;
    vm->fd = ioctl_retry(kvm.fd, KVM_CREATE_VM, 0);
    if (vm->fd < 0) {
        err = -errno;
        free(vm);
        return err;
    }
    /* Intel without unrestricted guest needs a TSS area for real mode; set it
     * out of the way (below 4 GiB, above any RAM we map there). */
    ioctl_retry(vm->fd, KVM_SET_TSS_ADDR, (void *)0xfffbd000ul);
    *out = vm;
    return 0;
}

static int kvm_map_ram(void *vmp, uint64_t gpa, void *host, uint64_t size)
{
    struct kvm_vm *vm = vmp;
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = gpa, .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)host,
    };
    if (ioctl_retry(vm->fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return -errno;
    vm->ram = region;
    return 0;
}

/* T:916 Live migration's log of the guest's writes (dirty.c): the memslot's
 * KVM_MEM_LOG_DIRTY_PAGES, with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 so that
 * KVM_GET_DIRTY_LOG only reads the log and KVM_CLEAR_DIRTY_LOG write-protects
 * again exactly the pages read (api.rst 4.117), instead of KVM re-protecting
 * the whole slot inside GET while it holds the MMU lock.  Without the
 * capability GET alone reads and clears, which is as correct, and the
 * reason is said.  Changing only a slot's flags is allowed while vCPUs run. */
static int kvm_dirty_log(void *vmp, int on, char *why, size_t len)
{
    struct kvm_vm *vm = vmp;
    uint64_t pages = vm->ram.memory_size / HV_PAGE_SIZE;
    if (on) {
        if (vm->log || !pages)
            return -EBUSY;
        vm->log = calloc((pages + 63) / 64, 8);
        if (!vm->log)
            return -ENOMEM;
        int caps = ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
        struct kvm_enable_cap cap = {
            .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            .args = { KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE },
        };
        vm->manual_clear = caps > 0 && (caps & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) &&
                           ioctl_retry(vm->fd, KVM_ENABLE_CAP, &cap) == 0;
        if (!vm->manual_clear && why && len)
            snprintf(why, len, "KVM without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: "
                     "each round reads and clears the log in one KVM_GET_DIRTY_LOG");
    }
    struct kvm_userspace_memory_region region = vm->ram;
    region.flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0;
    if (ioctl_retry(vm->fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        int err = -errno;
        if (on && why && len)
            snprintf(why, len, "KVM_MEM_LOG_DIRTY_PAGES: %s", strerror(errno));
        if (on) {
            free(vm->log);
            vm->log = NULL;
        }
        return err;
    }
    if (!on) {
        free(vm->log);
        vm->log = NULL;
    }
    return 0;
}

static int kvm_dirty_log_sync(void *vmp, uint64_t *bitmap)
{
    struct kvm_vm *vm = vmp;
    uint64_t pages = vm->ram.memory_size / HV_PAGE_SIZE, words = (pages + 63) / 64;
    struct kvm_dirty_log get = { .slot = 0, .dirty_bitmap = vm->log };
    if (ioctl_retry(vm->fd, KVM_GET_DIRTY_LOG, &get) < 0)
        return -errno;
    if (vm->manual_clear) {
        struct kvm_clear_dirty_log clear = {
            .slot = 0, .first_page = 0, .num_pages = (uint32_t)pages, .dirty_bitmap = vm->log,
        };
        if (ioctl_retry(vm->fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0)
            return -errno;
    }
    for (uint64_t w = 0; w < words; w++)
        bitmap[w] |= vm->log[w];
    return 0;
}

static int kvm_add_ioeventfd(void *vmp, uint64_t addr, uint32_t len, uint64_t match, int fd)
{
    struct kvm_vm *vm = vmp;
    struct kvm_ioeventfd io = {
        .datamatch = match, .addr = addr, .len = len, .fd = fd,
        .flags = KVM_IOEVENTFD_FLAG_DATAMATCH,
    };
    return ioctl_retry(vm->fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

static void kvm_vm_destroy(void *vmp)
{
    struct kvm_vm *vm = vmp;
    free(vm->log);
    close(vm->fd);
    free(vm);
}

static void kvm_vcpu_destroy(void *vp)
{
    struct kvm_vcpu_state *c = vp;
    if (c->run)
        munmap(c->run, (size_t)kvm.run_size);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

static int kvm_vcpu_create(void *vmp, uint32_t id, const struct engine_host *host,
                           struct hv_vcpu *owner, void **out)
{
    (void)host; (void)owner;   /* every exit returns to the run loop */
    struct kvm_vm *vm = vmp;
    struct kvm_vcpu_state *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->fd = ioctl_retry(vm->fd, KVM_CREATE_VCPU, (void *)(uintptr_t)id);
    int err;
    if (c->fd < 0)
        goto fail;
    c->run = mmap(NULL, (size_t)kvm.run_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
    if (c->run == MAP_FAILED) {
        c->run = NULL;
        goto fail;
    }
    /* KVM_GET_SUPPORTED_CPUID costs ~0.4 ms: once per process, and only
     * when a vCPU is made (probing the engine does not need it). */
    pthread_once(&kvm.cpuid_once, build_cpuid);
    if (!kvm.cpuid) {
        errno = ENOTSUP;
        goto fail;
    }
    if (ioctl_retry(c->fd, KVM_SET_CPUID2, kvm.cpuid) < 0)
        goto fail;
    /* Fill the sync view once, so it is valid before the first run. */
    if (ioctl_retry(c->fd, KVM_GET_REGS, &c->run->s.regs.regs) < 0 ||
        ioctl_retry(c->fd, KVM_GET_SREGS, &c->run->s.regs.sregs) < 0)
        goto fail;
    c->run->kvm_valid_regs = SYNC_FIELDS;
    *out = c;
    return 0;
fail:
    err = -errno;
    kvm_vcpu_destroy(c);
    return err ? err : -EIO;
}

static struct hv_regs *kvm_regs(void *vp)
{
    return (struct hv_regs *)&((struct kvm_vcpu_state *)vp)->run->s.regs.regs;
}

static void kvm_regs_dirty(void *vp)
{
    ((struct kvm_vcpu_state *)vp)->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
}

static int kvm_get_sregs(void *vp, struct hv_sregs *s)
{
    const struct kvm_sregs *k = &((struct kvm_vcpu_state *)vp)->run->s.regs.sregs;
    s->cr0 = k->cr0; s->cr2 = k->cr2; s->cr3 = k->cr3; s->cr4 = k->cr4;
    s->efer = k->efer;
    s->idt_base = k->idt.base; s->idt_limit = k->idt.limit;
    s->gdt_base = k->gdt.base; s->gdt_limit = k->gdt.limit;
    s->tr_base = k->tr.base;
    s->cs = k->cs.selector; s->ss = k->ss.selector;
    return 0;
}

/* Only the control registers: segments come from the guest's own GDT. */
static int kvm_set_sregs(void *vp, const struct hv_sregs *s)
{
    struct kvm_vcpu_state *c = vp;
    struct kvm_sregs *k = &c->run->s.regs.sregs;
    k->cr0 = s->cr0; k->cr2 = s->cr2; k->cr3 = s->cr3; k->cr4 = s->cr4;
    k->efer = s->efer;
    k->idt.base = s->idt_base; k->idt.limit = s->idt_limit;
    k->gdt.base = s->gdt_base; k->gdt.limit = s->gdt_limit;
    c->run->kvm_dirty_regs |= KVM_SYNC_X86_SREGS;
    return 0;
}

static struct kvm_segment flat_segment(uint16_t selector, uint8_t type)
{
    return (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = selector, .type = type,
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
    };
}

/* PVH entry state (Xen's docs/misc/pvh.pandoc): 32-bit flat protected mode,
 * paging off, CS/DS/ES/SS flat, TR a 32-bit TSS, EBX = start info. */
static int kvm_set_pvh_entry(void *vp, uint32_t entry, uint32_t info,
                             uint32_t gdt, uint16_t gdt_limit)
{
    struct kvm_vcpu_state *c = vp;
    struct kvm_sregs *k = &c->run->s.regs.sregs;
    k->cs = flat_segment(0x10, 0xb);                 /* execute/read, accessed */
    k->ds = k->es = k->fs = k->gs = k->ss = flat_segment(0x18, 0x3);   /* read/write, accessed */
    k->tr = (struct kvm_segment){ .limit = 0x67, .type = 0xb, .present = 1 };   /* busy 32-bit TSS */
    k->gdt.base = gdt;
    k->gdt.limit = gdt_limit;
    k->cr0 = 0x11;                                   /* PE | ET */
    k->cr3 = 0;
    k->cr4 = 0;
    k->efer = 0;
    struct kvm_regs *r = &c->run->s.regs.regs;
    memset(r, 0, sizeof(*r));
    r->rip = entry;
    r->rbx = info;
    r->rflags = 0x2;                                 /* reserved bit 1; IF = 0 */
    c->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    return 0;
}

/* T:417 A secondary vCPU's start (abi.h, "SMP"): straight into 64-bit
 * mode, CS the boot GDT's 64-bit code, the data segments flat. */
static int kvm_set_long_entry(void *vp, const struct hv_vcpu_context *ctx,
                              uint32_t gdt, uint16_t gdt_limit)
{
    struct kvm_vcpu_state *c = vp;
    struct kvm_sregs *k = &c->run->s.regs.sregs;
    k->cs = flat_segment(HV_VCPU_UP_CS, 0xb);
    k->cs.l = 1;
    k->cs.db = 0;
    k->ds = k->es = k->fs = k->gs = k->ss = flat_segment(HV_VCPU_UP_DS, 0x3);
    k->tr = (struct kvm_segment){ .limit = 0x67, .type = 0xb, .present = 1 };   /* busy 64-bit TSS */
    k->gdt.base = gdt;
    k->gdt.limit = gdt_limit;
    k->idt.base = 0;
    k->idt.limit = 0;
    k->cr0 = 0x80010031;                             /* PG | WP | NE | ET | PE */
    k->cr3 = ctx->cr3;
    k->cr4 = 0x20;                                   /* PAE */
    k->efer = 0xd00;                                 /* LME | LMA | NXE */
    struct kvm_regs *r = &c->run->s.regs.regs;
    memset(r, 0, sizeof(*r));
    r->rip = ctx->rip;
    r->rsp = ctx->rsp;
    r->rdi = ctx->arg;
    r->rflags = 0x2;
    c->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    /* What the last exit said about IF is the old life's: the new one
     * starts with interrupts off, so an upcall owed waits for a window
     * (kvm_interruptible), never goes through an IDT not yet loaded. */
    c->run->if_flag = 0;
    c->run->ready_for_interrupt_injection = 0;
    /* Nor does it inherit an interrupt the old life had been given: the
     * sync page's interrupt_bitmap is from the last exit (SET_SREGS would
     * queue it again, into an IDT not loaded yet: a triple fault), and
     * KVM may still hold one queued. */
    memset(k->interrupt_bitmap, 0, sizeof(k->interrupt_bitmap));
    struct kvm_vcpu_events ev;
    if (ioctl(c->fd, KVM_GET_VCPU_EVENTS, &ev) == 0 && (ev.interrupt.injected || ev.exception.injected)) {
        ev.interrupt.injected = 0;
        ev.exception.injected = 0;
        ev.flags = 0;
        if (ioctl(c->fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
            return -errno;
    }
    return 0;
}

/* KVM has no "flush this vCPU's TLB" call.  A control-register change
 * through SET_SREGS resets the vCPU's MMU context, which drops every
 * cached translation (shadow pages included): set the sregs once with
 * CR4.PGE flipped, and let the next KVM_RUN set them back (sync regs). */
#define CR4_PGE 0x80
static void kvm_flush_tlb(void *vp)
{
    struct kvm_vcpu_state *c = vp;
    struct kvm_sregs flipped = c->run->s.regs.sregs;
    flipped.cr4 ^= CR4_PGE;
    if (ioctl(c->fd, KVM_SET_SREGS, &flipped) == 0)
        c->run->kvm_dirty_regs |= KVM_SYNC_X86_SREGS;
}

/* A segment register's cache from its GDT descriptor (SDM vol. 3, 3.4.5),
 * for interrupts the core delivers itself (idt.c). */
static struct kvm_segment segment_from_descriptor(uint16_t selector, uint64_t d)
{
    struct kvm_segment seg = {
        .base = (d >> 16 & 0xffffff) | (d >> 56 & 0xff) << 24,
        .limit = (uint32_t)((d & 0xffff) | (d >> 32 & 0xf0000)),
        .selector = selector, .type = d >> 40 & 0xf, .s = d >> 44 & 1, .dpl = d >> 45 & 3,
        .present = d >> 47 & 1, .avl = d >> 52 & 1, .l = d >> 53 & 1, .db = d >> 54 & 1,
        .g = d >> 55 & 1,
    };
    if (seg.g)
        seg.limit = seg.limit << 12 | 0xfff;
    if ((selector & ~3u) == 0) {
        /* A NULL SS with the new RPL (a 64-bit interrupt to an inner ring):
         * usable, writable data, DPL = CPL (KVM derives the CPL from it). */
        seg = (struct kvm_segment){ .selector = selector, .limit = 0xffffffff, .type = 3,
                                    .s = 1, .dpl = selector & 3, .present = 1, .db = 1,
                                    .g = 1 };
    }
    return seg;
}

static int kvm_load_segments(void *vp, uint16_t cs, uint64_t cs_desc, uint16_t ss,
                             uint64_t ss_desc)
{
    struct kvm_vcpu_state *c = vp;
    struct kvm_sregs *k = &c->run->s.regs.sregs;
    k->cs = segment_from_descriptor(cs, cs_desc);
    k->ss = segment_from_descriptor(ss, ss_desc);
    c->run->kvm_dirty_regs |= KVM_SYNC_X86_SREGS;
    return 0;
}

static void kvm_complete_in(void *vp, uint64_t value)
{
    struct kvm_vcpu_state *c = vp;
    if (c->in_data)
        memcpy(c->in_data, &value, c->in_size <= 8 ? c->in_size : 8);
    c->in_data = NULL;
}

static void kvm_debug_exit(struct kvm_vcpu_state *c, struct engine_exit *exit);

static int kvm_run(void *vp, struct engine_exit *exit)
{
    struct kvm_vcpu_state *c = vp;
    struct kvm_run *run = c->run;
    c->in_data = NULL;
    int r = ioctl(c->fd, KVM_RUN, 0);
    run->immediate_exit = 0;
    if (r < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            exit->kind = ENGINE_EXIT_INTERRUPTED;
            return 0;
        }
        return -errno;
    }
    exit->detail = run->exit_reason;
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        exit->kind = ENGINE_EXIT_IO;
        exit->port = run->io.port;
        exit->size = run->io.size;
        exit->write = run->io.direction == KVM_EXIT_IO_OUT;
        exit->value = 0;
        if (exit->write)
            memcpy(&exit->value, data, run->io.size <= 8 ? run->io.size : 8);
        else {
            c->in_data = data;
            c->in_size = run->io.size;
            memset(data, 0xff, run->io.size);   /* default: empty bus */
        }
        break;
    }
    case KVM_EXIT_MMIO:
        exit->kind = ENGINE_EXIT_MMIO;
        exit->addr = run->mmio.phys_addr;
        exit->size = (uint8_t)run->mmio.len;
        exit->write = run->mmio.is_write;
        if (exit->write)
            memcpy(&exit->value, run->mmio.data, run->mmio.len <= 8 ? run->mmio.len : 8);
        else {
            c->in_data = run->mmio.data;
            c->in_size = run->mmio.len;
        }
        break;
    case KVM_EXIT_HLT:
        exit->kind = ENGINE_EXIT_HLT;
        break;
    case KVM_EXIT_SHUTDOWN:
        exit->kind = ENGINE_EXIT_SHUTDOWN;
        break;
    case KVM_EXIT_IRQ_WINDOW_OPEN:
        exit->kind = ENGINE_EXIT_WINDOW;
        break;
    case KVM_EXIT_INTR:
        exit->kind = ENGINE_EXIT_INTERRUPTED;
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        /* This machine's KVM (kvm_pvm) does not emulate INT3, INT n or
         * INTO in ring 0: it stops with an emulation failure at the
         * instruction.  The core delivers those through the IDT; any
         * other instruction is an engine failure. */
        exit->kind = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                     ? ENGINE_EXIT_EMULATE : ENGINE_EXIT_FAIL;
        break;
    case KVM_EXIT_DEBUG:
        kvm_debug_exit(c, exit);
        break;
    default:            /* FAIL_ENTRY, other internal errors, anything unexpected */
        exit->kind = ENGINE_EXIT_FAIL;
        break;
    }
    return 0;
}

/* Guest debugging through KVM_SET_GUEST_DEBUG: INT3 and the debug
 * registers exit to us instead of reaching the guest.  DR7 (SDM vol. 3,
 * 18.2.4): L<i> enables slot i; R/W<i> 00 execute, 01 write, 11 access;
 * LEN<i> 00 one byte, 01 two, 11 four, 10 eight. */
static int kvm_set_debug(void *vp, uint32_t flags, const uint64_t *addr, const uint32_t *kind)
{
    struct kvm_vcpu_state *c = vp;
    struct kvm_guest_debug dbg;
    memset(&dbg, 0, sizeof(dbg));
    uint64_t dr7 = 0;
    for (int i = 0; i < HV_DEBUG_SLOTS; i++) {
        c->debug_addr[i] = addr[i];
        c->debug_kind[i] = kind[i];
        uint32_t type = kind[i] & 0xff, len = kind[i] >> 8 & 0xff;
        if (!type)
            continue;
        uint64_t rw = type == HV_DEBUG_HW_EXEC ? 0 : type == HV_DEBUG_HW_WRITE ? 1 : 3;
        uint64_t lenbits = type == HV_DEBUG_HW_EXEC || len <= 1 ? 0 : len == 2 ? 1 : len == 8 ? 2 : 3;
        dbg.arch.debugreg[i] = addr[i];
        dr7 |= 1ull << (2 * i) | rw << (16 + 4 * i) | lenbits << (18 + 4 * i);
    }
    dbg.arch.debugreg[7] = dr7;
    if (flags || dr7)
        dbg.control = KVM_GUESTDBG_ENABLE
                      | (flags & HV_DEBUG_SW_BP ? KVM_GUESTDBG_USE_SW_BP : 0)
                      | (flags & HV_DEBUG_STEP ? KVM_GUESTDBG_SINGLESTEP : 0)
                      | (dr7 ? KVM_GUESTDBG_USE_HW_BP : 0);
    return ioctl(c->fd, KVM_SET_GUEST_DEBUG, &dbg) ? -errno : 0;
}

/* KVM_EXIT_DEBUG: #BP (an INT3, pc at it) or #DB (DR6: B0..B3 a slot, BS a step). */
static void kvm_debug_exit(struct kvm_vcpu_state *c, struct engine_exit *exit)
{
    const struct kvm_debug_exit_arch *d = &c->run->debug.arch;
    exit->kind = ENGINE_EXIT_DEBUG;
    exit->addr = d->pc;
    exit->value = HV_DEBUG_STOP_STEP;
    if (d->exception == 3) {
        exit->value = HV_DEBUG_STOP_BREAKPOINT;
        return;
    }
    for (int i = 0; i < HV_DEBUG_SLOTS; i++) {
        if (d->dr6 & (1u << i) && c->debug_kind[i]) {
            exit->addr = c->debug_addr[i];
            exit->value = (c->debug_kind[i] & 0xff) == HV_DEBUG_HW_EXEC ? HV_DEBUG_STOP_HW_BREAK
                                                                      : HV_DEBUG_STOP_WATCH;
            return;
        }
    }
}

static int kvm_interruptible(void *vp)
{
    struct kvm_run *run = ((struct kvm_vcpu_state *)vp)->run;
    return run->ready_for_interrupt_injection && run->if_flag;
}

static int kvm_inject(void *vp, uint8_t vector)
{
    struct kvm_interrupt irq = { .irq = vector };
    return ioctl(((struct kvm_vcpu_state *)vp)->fd, KVM_INTERRUPT, &irq) < 0 ? -errno : 0;
}

static void kvm_request_window(void *vp, int on)
{
    ((struct kvm_vcpu_state *)vp)->run->request_interrupt_window = (uint8_t)on;
}

/* From the kick signal handler: KVM_RUN checks this on entry, and the signal
 * itself interrupts a KVM_RUN in progress. */
static void kvm_kick_from_signal(void *vp)
{
    ((struct kvm_vcpu_state *)vp)->run->immediate_exit = 1;
}

const struct engine_ops engine_kvm_ops = {
    .name = "kvm",
    .probe = kvm_probe,
    .vm_create = kvm_vm_create,
    .map_ram = kvm_map_ram,
    .dirty_log = kvm_dirty_log,
    .dirty_log_sync = kvm_dirty_log_sync,
    .vm_destroy = kvm_vm_destroy,
    .add_ioeventfd = kvm_add_ioeventfd,
    .vcpu_create = kvm_vcpu_create,
    .vcpu_destroy = kvm_vcpu_destroy,
    .regs = kvm_regs,
    .regs_dirty = kvm_regs_dirty,
    .read_regs = NULL,              /* the view is already in memory */
    .write_reg = NULL,
    .get_sregs = kvm_get_sregs,
    .set_sregs = kvm_set_sregs,
    .set_pvh_entry = kvm_set_pvh_entry,
    .set_long_entry = kvm_set_long_entry,
    .flush_tlb = kvm_flush_tlb,
    .complete_in = kvm_complete_in,
    .run = kvm_run,
    .interruptible = kvm_interruptible,
    .inject = kvm_inject,
    .load_segments = kvm_load_segments,     /* software interrupts KVM gave up on */
    .request_window = kvm_request_window,
    .count_instructions = NULL,
    .trace_code = NULL,
    .kick_from_signal = kvm_kick_from_signal,
    .set_debug = kvm_set_debug,
    .get_state = kvm_get_state,     /* engine_kvm_snapshot.c */
    .set_state = kvm_set_state,
};
