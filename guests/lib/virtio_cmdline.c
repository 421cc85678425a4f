/* virtio_cmdline.c - `key=value` words of the kernel command line. */
#include "start_info.h"
#include "virtio_cmdline.h"

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n';
}

const char *cmdline_value(const char *key, unsigned nth, size_t *len)
{
    const char *p = start_info_cmdline();

    while (*p != '\0') {
        while (is_blank(*p))
            p++;
        const char *word = p;

        while (*p != '\0' && !is_blank(*p))
            p++;
        /* word..p is one word: does it start with key, then '=' or end? */
        const char *k = key, *w = word;

        while (*k != '\0' && w < p && *w == *k) {
            k++;
            w++;
        }
        if (*k != '\0' || (w < p && *w != '='))
            continue;
        if (nth-- > 0)
            continue;
        if (w < p)
            w++;                /* past '=' */
        *len = (size_t)(p - w);
        return w;
    }
    return NULL;
}

static int digit_value(char c, unsigned base)
{
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : 99;
    return d < (int)base ? d : -1;
}

bool cmdline_parse_uint(const char *s, size_t len, uint64_t *v, size_t *end)
{
    unsigned base = 10;
    size_t i = 0;
    uint64_t n = 0;

    if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    }
    size_t first = i;

    for (int d; i < len && (d = digit_value(s[i], base)) >= 0; i++) {
        if (n > (UINT64_MAX - (uint64_t)d) / base)
            return false;
        n = n * base + (uint64_t)d;
    }
    if (i == first)
        return false;
    unsigned shift = 0;

    if (i < len && (s[i] == 'K' || s[i] == 'k'))
        shift = 10;
    else if (i < len && (s[i] == 'M' || s[i] == 'm'))
        shift = 20;
    else if (i < len && (s[i] == 'G' || s[i] == 'g'))
        shift = 30;
    if (shift != 0) {
        if (n > (UINT64_MAX >> shift))
            return false;
        n <<= shift;
        i++;
    }
    *v = n;
    *end = i;
    return true;
}

uint64_t cmdline_uint(const char *key, uint64_t fallback)
{
    size_t len, end;
    uint64_t v;
    const char *s = cmdline_value(key, 0, &len);

    if (s == NULL || !cmdline_parse_uint(s, len, &v, &end) || end != len)
        return fallback;
    return v;
}

bool cmdline_is(const char *key, const char *word)
{
    size_t len, i = 0;
    const char *s = cmdline_value(key, 0, &len);

    if (s == NULL)
        return false;
    while (i < len && word[i] == s[i])
        i++;
    return i == len && word[i] == '\0';
}

bool cmdline_channel(uint32_t *peer, bool *side_b, uint32_t *gref)
{
    size_t len, used, i = 0;
    uint64_t n;
    const char *v = cmdline_value("channel", 0, &len);
    if (!v)
        return false;
    while (i < len && v[i] != ',')      /* past NAME */
        i++;
    if (++i >= len || !cmdline_parse_uint(v + i, len - i, &n, &used))
        return false;
    *peer = (uint32_t)n;
    i += used;
    if (i + 1 >= len || v[i] != ',' || (v[i + 1] != 'a' && v[i + 1] != 'b'))
        return false;
    *side_b = v[i + 1] == 'b';
    if (!gref)
        return true;
    i += 2;
    if (i + 1 >= len || v[i] != ',' || !cmdline_parse_uint(v + i + 1, len - i - 1, &n, &used))
        return false;
    *gref = (uint32_t)n;
    return true;
}
