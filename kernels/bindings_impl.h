/* The adapters of module.c's binding table, for one floating type (each_real.h). */
FASTBP_BINDINGS(ADAPTER)
