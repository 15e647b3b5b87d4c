/* In-process libwbxml2 timing for the same message dmpushd's benches/codec.rs uses, so the two can be
 * compared without process-spawn overhead. Usage: libwbxml_bench MESSAGE.xml ITERATIONS
 * Prints ns per message and MB/s (counted on the WBXML size) for XML->WBXML and WBXML->XML. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wbxml/wbxml.h>
#include <wbxml/wbxml_conv.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s MESSAGE.xml ITERATIONS\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    static unsigned char xml[1 << 20];
    size_t xml_len = fread(xml, 1, sizeof xml - 1, f);
    fclose(f);
    xml[xml_len] = 0;
    long iters = atol(argv[2]);

    WB_UTINY *wbxml = NULL; WB_ULONG wbxml_len = 0;
    double t0 = now();
    for (long i = 0; i < iters; i++) {
        WBXMLConvXML2WBXML *c = NULL;
        if (wbxml_conv_xml2wbxml_create(&c) != WBXML_OK) return 1;
        if (wbxml) { free(wbxml); wbxml = NULL; }
        if (wbxml_conv_xml2wbxml_run(c, xml, (WB_ULONG)xml_len, &wbxml, &wbxml_len) != WBXML_OK) return 1;
        wbxml_conv_xml2wbxml_destroy(c);
    }
    double enc = (now() - t0) / iters;

    t0 = now();
    for (long i = 0; i < iters; i++) {
        WBXMLConvWBXML2XML *c = NULL;
        WB_UTINY *out = NULL; WB_ULONG out_len = 0;
        if (wbxml_conv_wbxml2xml_create(&c) != WBXML_OK) return 1;
        wbxml_conv_wbxml2xml_set_gen_type(c, WBXML_GEN_XML_COMPACT);
        if (wbxml_conv_wbxml2xml_run(c, wbxml, wbxml_len, &out, &out_len) != WBXML_OK) return 1;
        free(out);
        wbxml_conv_wbxml2xml_destroy(c);
    }
    double dec = (now() - t0) / iters;
    printf("libwbxml xml_to_wbxml: %.0f ns/msg, %.1f MB/s (WBXML %lu B)\n", enc, wbxml_len / enc * 1e3, (unsigned long)wbxml_len);
    printf("libwbxml wbxml_to_xml: %.0f ns/msg, %.1f MB/s (WBXML %lu B)\n", dec, wbxml_len / dec * 1e3, (unsigned long)wbxml_len);
    free(wbxml);
    return 0;
}
