/*
 * rtc_cmos.c - the PC's MC146818 real-time clock and CMOS RAM (ports 0x70,
 * 0x71).
 *
 * T:552 A kernel reads the wall-clock time here at boot (Linux:
 * mach_get_cmos_time).  An empty bus would read 0xff, whose "update in
 * progress" bit never clears: Linux then spins for seconds before giving up.
 * So hv answers with the host's UTC time, in the format status register B
 * asks for (BCD or binary, 12- or 24-hour), never mid-update.  Writes to
 * the time registers are ignored (the guest cannot move the host's clock);
 * the other CMOS bytes are plain RAM.  Registers as in the MC146818A data
 * sheet.
 */
#include <time.h>
#include "core.h"

enum {
    SECONDS = 0x00, MINUTES = 0x02, HOURS = 0x04, WEEKDAY = 0x06, DAY = 0x07,
    MONTH = 0x08, YEAR = 0x09, STATUS_A = 0x0a, STATUS_B = 0x0b, STATUS_C = 0x0c,
    STATUS_D = 0x0d, CENTURY = 0x32,
};

#define B_24HOUR   0x02
#define B_BINARY   0x04
#define D_VALID    0x80         /* the battery is good: time and RAM are valid */
#define A_DIVIDER  0x26         /* 32.768 kHz time base, 1024 Hz periodic rate */

static uint8_t encode(const struct rtc_cmos *r, unsigned value)
{
    return (r->ram[STATUS_B] & B_BINARY) ? (uint8_t)value
                                         : (uint8_t)(((value / 10) << 4) | (value % 10));
}

static uint8_t read_time(const struct rtc_cmos *r, uint8_t index)
{
    time_t now = time(NULL);
    struct tm t;
    gmtime_r(&now, &t);
    switch (index) {
    case SECONDS: return encode(r, (unsigned)t.tm_sec);
    case MINUTES: return encode(r, (unsigned)t.tm_min);
    case HOURS:
        if (r->ram[STATUS_B] & B_24HOUR)
            return encode(r, (unsigned)t.tm_hour);
        /* 12-hour: 1..12, bit 7 for PM. */
        return (uint8_t)(encode(r, (unsigned)(t.tm_hour % 12 ? t.tm_hour % 12 : 12)) |
                         (t.tm_hour >= 12 ? 0x80 : 0));
    case WEEKDAY: return encode(r, (unsigned)t.tm_wday + 1);
    case DAY:     return encode(r, (unsigned)t.tm_mday);
    case MONTH:   return encode(r, (unsigned)t.tm_mon + 1);
    case YEAR:    return encode(r, (unsigned)(t.tm_year % 100));
    default:      return encode(r, (unsigned)(t.tm_year / 100 + 19));   /* CENTURY */
    }
}

void rtc_reset(struct rtc_cmos *r)
{
    r->ram[STATUS_A] = A_DIVIDER;
    r->ram[STATUS_B] = B_24HOUR;
    r->ram[STATUS_D] = D_VALID;
}

/* port 0 = the index port (0x70), 1 = the data port (0x71). */
void rtc_access(struct rtc_cmos *r, unsigned port, int write, uint8_t *value)
{
    if (port == 0) {
        if (write)
            r->index = *value & 0x7f;       /* bit 7 masks NMIs: there are none */
        else
            *value = 0xff;                  /* write-only on a PC */
        return;
    }
    uint8_t i = r->index;
    int clock = i <= YEAR || i == CENTURY;
    if (write) {
        if (i == STATUS_B)
            r->ram[i] = *value & (B_24HOUR | B_BINARY);   /* no interrupts, no SET */
        else if (!clock && i != STATUS_C && i != STATUS_D)
            r->ram[i] = *value;
        return;
    }
    if (clock && i != 1 && i != 3 && i != 5)          /* 1, 3, 5: alarms, plain bytes */
        *value = read_time(r, i);
    else if (i == STATUS_A)
        *value = A_DIVIDER;                            /* UIP (bit 7) never set */
    else if (i == STATUS_C)
        *value = 0;                                    /* no interrupt flags */
    else
        *value = r->ram[i];
}
