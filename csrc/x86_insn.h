/* x86_insn.h - the one-byte opcodes the core and the engines recognise in
 * guest code (Intel SDM vol. 2, appendix A), in one place. */
#ifndef HV_X86_INSN_H
#define HV_X86_INSN_H

#define INSN_INT3 0xcc      /* int3: #BP, a trap past its one byte */
#define INSN_INT  0xcd      /* int imm8 */
#define INSN_INTO 0xce      /* into: #OF if RFLAGS.OF, invalid in 64-bit mode */
#define INSN_HLT  0xf4

#endif
