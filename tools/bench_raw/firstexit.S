/*
 * firstexit.S - the smallest PVH image hv can boot, for `tools/bench boot`'s
 * create -> first hypercall figure.  Its first instruction is the hypercall
 * trap itself, the same instruction rawkvm.c's `create` round runs first:
 *
 *   out %al, $0xea     RAX = 0 at PVH entry: HV_HC_VERSION (a raw trap; the
 *                      hypercall page is not needed for it)
 *   jmp 1f             ends the translation block (see below)
 *   HV_HC_SHUTDOWN(POWEROFF, 0), then hlt
 *
 * So the figure is hv's own cost (loader, partition, vCPU, first entry),
 * not the guest library's boot code.  Built by tools/bench with
 * guests/linker.ld into build/bench/firstexit.elf.
 */
    .section .note.Xen, "a"
    .balign 4
    .long 4                         /* namesz "Xen\0" */
    .long 4                         /* descsz */
    .long 18                        /* XEN_ELFNOTE_PHYS32_ENTRY (HV_PVH_NOTE_ENTRY) */
    .asciz "Xen"
    .long pvh_start32

    .section .text.entry, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    outb    %al, $0xea              /* HV_HC_VERSION: the first exit */
    /*
     * On hv's TCG engine a stop for the parent takes effect only at the end
     * of the translation block; a second `out` in the same block would be
     * handled before the parent saw the first, and overwrite its exit record
     * (reported in docs/engines.md).  A jump ends the block.  The figure is
     * taken at the first exit, so this costs nothing measured.
     */
    jmp     1f
1:  mov     $5, %eax                /* HV_HC_SHUTDOWN */
    xor     %edi, %edi              /* HV_SHUTDOWN_POWEROFF */
    xor     %esi, %esi              /* code 0 */
    outb    %al, $0xea
    hlt

    .section .note.GNU-stack, "", @progbits
