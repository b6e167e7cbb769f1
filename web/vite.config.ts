// The dashboard's build: one JS and one CSS file with fixed names (the
// Rust side embeds web/dist/index.html, assets/app.js and assets/app.css and
// adds a ?v=<hash> itself), no source maps, no preload polyfill, so the
// committed bundle stays small and the build is byte-for-byte reproducible.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/ui/',
  esbuild: { jsx: 'automatic', legalComments: 'none' },
  build: {
    outDir: process.env.WEFT_UI_OUT || 'dist',
    emptyOutDir: true,
    sourcemap: false,
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    target: 'es2020',
    reportCompressedSize: false,
    rollupOptions: {
      output: {
        entryFileNames: 'assets/app.js',
        chunkFileNames: 'assets/app-[name].js',
        assetFileNames: 'assets/app[extname]',
        inlineDynamicImports: true,
      },
    },
  },
});
