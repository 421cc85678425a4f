/*
 * start.S - from the PVH entry point to C, in long mode.
 *
 * Ring-0 guest code is slow on the machines hv runs on (about 1 us per
 * instruction, see docs), so everything that can be decided when the image
 * is built is: the page tables and the GDT are data in the image, and the
 * path from the entry point to kmain() is about twenty instructions.
 */
#include "x86.h"
#include "asm-defs.h"

/*
 * T:300 The guest's story starts in its ELF file.  A PT_NOTE segment holds
 * Xen's PVH note XEN_ELFNOTE_PHYS32_ENTRY: owner "Xen", desc = the 32-bit
 * physical address of the entry point.  hv's loader and QEMU's -kernel both
 * look for it, so the same image boots on both.
 */
    .section .note.Xen, "a"
    .balign 4
    .long 4                         /* namesz: "Xen\0" */
    .long 4                         /* descsz: a 32-bit address */
    .long ASM_PVH_NOTE_ENTRY        /* type 18, from hv/abi.h */
    .asciz "Xen"
    .long pvh_start32
    /*
     * QEMU 7.2 reads this desc as a host size_t (8 bytes) for an ELF64
     * image; linker.ld puts a zero word right after this section (outside
     * the PT_NOTE) so the upper half it reads is 0.
     */

/*
 * T:305 Entry: 32-bit flat protected mode, paging off, IF=0, EBX = physical
 * address of struct hv_pvh_start_info.  Long mode needs PAE, EFER.LME, a PML4
 * in CR3 and then CR0.PG (SDM Vol. 3A 10.8.5); the far jump loads a 64-bit
 * code segment from our GDT.
 */
    .section .text.entry, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    lgdt    gdt_ptr
    mov     $CR4_PAE, %eax
    mov     %eax, %cr4
    mov     $pml4, %eax
    mov     %eax, %cr3
    mov     $MSR_EFER, %ecx
    mov     $(EFER_LME | EFER_NXE), %eax
    xor     %edx, %edx
    wrmsr
    mov     $(CR0_PG | CR0_WP | CR0_NE | CR0_ET | CR0_PE), %eax
    mov     %eax, %cr0
    ljmp    $GDT_CODE64, $start64

/*
 * T:310 In 64-bit mode.  SS must be a selector of *our* GDT: an interrupt
 * pushes it and IRETQ reloads it, and the loader's selector may not exist
 * here.  DS/ES for tidiness; FS/GS are unused.
 *
 * No .bss clearing: hv and QEMU both hand over RAM that is already zero,
 * and a loop over the stack and the page-sized buffers would cost
 * thousands of slow ring-0 instructions.
 */
    .code64
start64:
    mov     $GDT_DATA, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    mov     $stack_top, %esp        /* a 32-bit move zero-extends into RSP */
    mov     %ebx, %edi              /* kmain(start_info) */
    call    kmain
    ud2                             /* kmain does not return */

/*
 * The GDT: null, 64-bit code, data (SDM Vol. 3A 3.4.5).  In long mode only
 * the L, P, S/type and DPL bits matter; base and limit are ignored.
 */
    .section .rodata
    .balign 8
gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* GDT_CODE64: present, ring 0, code, L=1 */
    .quad 0x00cf92000000ffff        /* GDT_DATA: present, ring 0, data, writable */
gdt_end:
    .globl gdt_ptr                  /* secondary CPUs load it too (smp_entry.S) */
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt                       /* 32-bit LGDT reads the low 4 bytes */

/*
 * Identity map of the first 4 GiB with 2 MiB pages, built by the assembler:
 * PML4[0] -> PDPT, PDPT[0..3] -> four page directories of 512 entries each.
 * Guest-virtual == guest-physical, so a pointer is also what hv must be told
 * (hypercall page frame, event page).  Addresses from 4 GiB up are unmapped;
 * the hypercall self-test relies on that for its bad-pointer cases.
 */
    .section .data.pagetables, "aw"
    .balign 4096
pml4:
    .quad pdpt + PTE_P + PTE_W
    .fill 511, 8, 0
pdpt:
    .quad pd + 0 * 4096 + PTE_P + PTE_W
    .quad pd + 1 * 4096 + PTE_P + PTE_W
    .quad pd + 2 * 4096 + PTE_P + PTE_W
    .quad pd + 3 * 4096 + PTE_P + PTE_W
    .fill 508, 8, 0
pd:
    page = 0
    .rept 4 * 512
    .quad (page << PAGE_SHIFT_2M) + PTE_PS + PTE_P + PTE_W
    page = page + 1
    .endr

    .section .bss
    .balign 16
    .globl stack_top
stack:
    .skip 16384
stack_top:

    .section .note.GNU-stack, "", @progbits
